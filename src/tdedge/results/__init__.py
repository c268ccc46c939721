"""Query job results: their format (format.py) and where they are kept (store.py: the
data dir's folder, or objects.py: the shared lake's S3 bucket)."""
