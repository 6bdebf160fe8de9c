"""torchdeck's training engine: presets in, typed events and run folders out.

Public API (import the submodules; this package imports nothing heavy on its own):
- engine.presets: discover_presets, resolve_config, apply_overrides, save_preset
- engine.schema: validate, json_schema (the preset schema)
- engine.jobs: TrainJob, ResumeJob, ReplayJob, prepare, start_detached
- engine.api: start_run / start_job (async) -> LocalHandle; run_sync for headless use
- engine.handle: the handle protocol, LocalHandle, FollowHandle (follow a run folder)
- engine.events: the event dataclasses, RunStatus
- engine.rundir: RunDir, RunRecord (the one reader of run.toml), find_run, list_runs
- engine.errors: TorchdeckError and its kinds (one-line messages for users)
"""
