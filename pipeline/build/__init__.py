"""Build: a model's Dockerfile from its kind's Jinja2 template, and its image (Docker SDK)."""

from pipeline.build.dockerfiles import render_dockerfile
from pipeline.build.images import BuiltImage, build_image, docker_available, docker_client, image_tag

__all__ = ["BuiltImage", "build_image", "docker_available", "docker_client", "image_tag", "render_dockerfile"]
