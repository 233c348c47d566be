"""`python -m exporter`: the same entry point as the x-usage-exporter console script."""

from exporter.cli import main

raise SystemExit(main())
