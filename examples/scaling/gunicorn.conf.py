"""gunicorn settings for a paid Flask app whose workers all receive on one account of the
bundled connector (docs/scaling.md)::

    ilp-receiver connector --config examples/scaling/connector-btp.toml &
    ILP_UPLINK=btp+ws://shop:shop-token@127.0.0.1:7768/shop \
    ILP_STORE='postgresql://127.0.0.1:5432/test?prefix=shop_' \
    ILP_SECRET=$(cat shop.secret) \
    gunicorn -c examples/scaling/gunicorn.conf.py --chdir examples 'flask_paid_api:create_app()'

Every worker dials the same account with the same credentials; the connector spreads
the account's Prepares over their connections.  Give every worker the same secret and
store (``ILP_SECRET``, ``ILP_STORE``).
"""

workers = 4
bind = "127.0.0.1:8000"


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Connect this worker's receiver now: a worker that waited for its first HTTP
    request would take no payments until then (the connector only spreads Prepares over
    connected workers)."""
    from ilp_receiver_flask import get_service

    get_service(worker.wsgi).start()
