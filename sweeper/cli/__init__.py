"""The commands (`python -m sweeper ...`): argument parsing, the one-line `error:` contract
and exit codes. Nothing below imports this package.

- `main`: launch, resume, spaces, select, export, stack; `main()` is the console script
- `select`: the `select` command (the front as a menu, optionally exported)
- `export`: the `export` command's options, write and report
- `config_help`: `launch --help`'s settings and docs/configuration.md, from the declarations
"""
