"""A small Django project for the adapter's tests (in process, and under runserver,
gunicorn and uvicorn)."""
