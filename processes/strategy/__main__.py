"""python -m processes.strategy: run this process alone (see --help)."""

from processes.strategy.host import main

raise SystemExit(main())
