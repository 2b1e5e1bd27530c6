from handle_server.cli import main

raise SystemExit(main())
