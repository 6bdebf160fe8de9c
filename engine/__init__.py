"""torchdeck's training engine: presets in, typed events and run folders out.

Public API (import the submodules; this package imports nothing heavy on its own):
- engine.presets: discover_presets, resolve_config, apply_overrides, save_preset
- engine.api: start_run (async) -> RunHandle; run_sync for headless use
- engine.events: the event dataclasses
- engine.rundir: RunDir, find_run, list_runs
- engine.errors: TorchdeckError and its kinds (one-line messages for users)
"""
