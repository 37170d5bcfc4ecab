"""Allow ``python -m dnstrace``."""

from dnstrace.cli.main import main

raise SystemExit(main())
