"""The bottom layer: what every package may use, importing nothing of sweeper above it.

- `config`: every setting (typed, frozen, validated), overrides, `build_config`
- `checks`: `setting` (a field's default, meaning, range or choices) and the checks that
  enforce it; `errors`: `UserError`
- `objectives`: the three objectives, declared once
- `files`: atomic writes, locks, writable folders, file names of a trial checkpoint
- `journal`: trials.jsonl; `sweep_folder`: finding a sweep, its versioned records
  (sweep.json, pipeline.json)
- `node_lock`: the node-wide quiet lock that timing takes and data loading yields to
- `startup`: heavy imports with the collector paused; `quiet`: third-party chatter silenced
"""
