"""Aggregation over streamed records (SPEC §8): metrics per time bucket and group, and agreement
between raters. Records come from :meth:`annotation_gateway.federation.Federation.stream` a chunk
at a time; nothing here holds whole annotations.

Modules: :mod:`.buckets` (UTC time buckets), :mod:`.stats` (the statistics, checked against
numpy, scikit-learn, statsmodels and krippendorff in the tests), :mod:`.metrics`,
:mod:`.agreement`. :meth:`~annotation_gateway.federation.Federation.consume` drives the
stream into an aggregator.
"""
