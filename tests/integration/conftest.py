from tests.integration.chromium import shared_chromium
from tests.integration.harness import running
from tests.integration.redis_server import redis_server, redis_url

__all__ = ["redis_server", "redis_url", "running", "shared_chromium"]
