from tests.http_server import http_server  # noqa: F401  (the fixture, for every test in this folder)
