"""``python -m annotation_gateway.cli``: the same as the ``annotation-gateway`` console script."""

from annotation_gateway.cli import main

main()
