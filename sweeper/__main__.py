from sweeper.cli.main import main

raise SystemExit(main())
