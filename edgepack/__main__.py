from edgepack.cli.main import main

raise SystemExit(main())
