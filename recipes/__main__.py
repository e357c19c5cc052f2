from recipes.cli import main

raise SystemExit(main())
