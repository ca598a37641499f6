"""The demo order flow as a running aiohttp service (see ``flowtracker/demo.py``).

    python examples/aiohttp_app.py                 # serves http://127.0.0.1:8080/
    python examples/aiohttp_app.py --port 0 --requests 3

It sends ``--requests`` requests to itself, then keeps serving until Ctrl-C.
Each request prints two ``FLOW_LOG:`` lines (the orders and the shipping
service, one trace id) and appends them to ``--traces`` (JSON Lines).
"""

from __future__ import annotations

import argparse
import asyncio

from flowtracker.demo import run_demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--requests", type=int, default=1, help="requests the demo sends itself first")
    parser.add_argument("--traces", default="traces.jsonl", help="JSON Lines file the traces go to")
    args = parser.parse_args(argv)
    asyncio.run(
        run_demo(args.requests, serve=True, host=args.host, port=args.port, traces_path=args.traces)
    )


if __name__ == "__main__":
    main()
