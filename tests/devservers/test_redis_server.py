"""The suite's redis-server plugin: a real server, restartable on its port, empty after restart."""

from __future__ import annotations

import redis

from tests.plugins.redis import RedisServer


def test_redis_server_answers_with_redis_py(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.set("plugin-check", b"1")
        assert client.get("plugin-check") == b"1"
        info = client.info("server")
        assert str(info["redis_version"]).startswith("7.")
        assert client.config_get("save") == {"save": ""}
    finally:
        client.delete("plugin-check")
        client.close()


def test_restart_keeps_the_port_and_loses_the_data(redis_instance: RedisServer) -> None:
    client = redis.Redis.from_url(redis_instance.url)
    try:
        client.set("k", b"v")
        port = redis_instance.port
        redis_instance.stop()
        assert not redis_instance.ping()
        redis_instance.start()
        assert redis_instance.port == port
        assert client.get("k") is None  # redis-py reconnects by itself; the server came back empty
    finally:
        client.close()
        redis_instance.stop()
