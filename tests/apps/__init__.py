"""Programs the real-process tests run: a WSGI app for gunicorn, child and producer scripts."""
