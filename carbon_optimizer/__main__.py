"""`python -m carbon_optimizer` is the `carbon-optimizer` command."""

from carbon_optimizer.cli import main

raise SystemExit(main())
