from keras_zoo_cli.main import main

raise SystemExit(main())
