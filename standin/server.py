"""Local stand-in for the AWS APIs iot-custom-auth uses: moto, plus what moto lacks.

Prints `STANDIN_URL=http://HOST:PORT` once it accepts connections, then serves until
its standard input reaches end-of-file (so it dies with its parent, even a
SIGKILLed one) or it receives SIGTERM/SIGINT. See README.md.
"""

import argparse
import logging
import os
import signal
import sys
import threading


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--role-propagation-seconds", type=float)
    parser.add_argument("--function-pending-seconds", type=float)
    parser.add_argument("--function-update-seconds", type=float)
    parser.add_argument("--table-create-seconds", type=float)
    parser.add_argument("--no-aws-delays", action="store_true", help="set the four delays to 0")
    parser.add_argument("--latency-ms", type=float, help="added before serving each AWS call (default 0)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # Must be set before moto's IAM backend exists, or AWS-managed policies
    # (AWSLambdaBasicExecutionRole) cannot be attached.
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"

    # Imported after the environment is set; they import moto.
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    import access
    import behaviour
    import dynamodb_lifecycle
    import iot_authorizers
    import lambda_lifecycle
    import lambda_realism
    import partitions
    import logs
    from middleware import StandInMiddleware

    behaviour.STATE.set_start_values(
        behaviour.start_values(
            args.no_aws_delays,
            role_propagation_seconds=args.role_propagation_seconds,
            function_pending_seconds=args.function_pending_seconds,
            function_update_seconds=args.function_update_seconds,
            table_create_seconds=args.table_create_seconds,
            latency_ms=args.latency_ms,
        )
    )
    iot_authorizers.install()
    partitions.install()
    lambda_realism.install()
    lambda_lifecycle.install()  # wraps on top of lambda_realism's wrappers
    logs.install()
    dynamodb_lifecycle.install()
    access.install()

    app = StandInMiddleware(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    server.daemon_threads = True
    # One log line per request would drown test output; errors still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    threading.Thread(target=_exit_at_stdin_eof, daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: _exit())

    host, port = server.server_address[:2]
    import authorizer_invoke

    authorizer_invoke.ENDPOINT_URL = f"http://{host}:{port}"
    print(f"STANDIN_URL=http://{host}:{port}", flush=True)
    server.serve_forever()


def _exit_at_stdin_eof() -> None:
    while sys.stdin.buffer.read(65536):
        pass
    _exit()


def _exit() -> None:
    # All state is in memory and disposable: exit at once rather than wait for
    # serve_forever's poll interval and in-flight requests.
    os._exit(0)


if __name__ == "__main__":
    main()
