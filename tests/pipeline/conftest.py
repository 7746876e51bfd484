"""Fixtures the pipeline tests share: real services on 127.0.0.1 and a Docker engine.

They live in their own modules (``services``, ``smtp``, ``docker_fixtures``) and are
registered here, so a test names a fixture without importing it.
"""

from tests.pipeline.docker_fixtures import base_image, docker_engine, small_model_image  # noqa: F401
from tests.pipeline.services import mlflow_server, postgres_server, postgres_url  # noqa: F401
from tests.pipeline.smtp import smtp_server  # noqa: F401
