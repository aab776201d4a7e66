"""The ``aggregate_analytics`` job: analytics events rolled up into hourly and daily buckets.

Kept free of imports: the payload schema imports :mod:`.ranges` from here.
"""
