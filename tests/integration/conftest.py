from tests.integration.harness import running

__all__ = ["running"]
