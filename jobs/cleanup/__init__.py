"""The ``cleanup`` job: old analytics events and resolved error logs deleted in bounded batches."""
