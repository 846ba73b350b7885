"""`QUEUE_CONNECTION` turns into the right driver, and a missing extra says what to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prasso_messaging.db.engine import Database
from prasso_messaging.errors import ConfigError
from prasso_messaging.runtime import build_queue
from tests.conftest import make_settings

EXTRAS = {
    "redis": ("redis", "prasso_messaging.queue.redis", "RedisQueue"),
    "sqs": ("boto3", "prasso_messaging.queue.sqs", "SqsQueue"),
    "beanstalkd": ("greenstalk", "prasso_messaging.queue.beanstalkd", "BeanstalkdQueue"),
}
SQS = {
    "SQS_QUEUE_URL": "http://127.0.0.1:1/000000000000/default",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
}


@pytest.mark.parametrize("driver", list(EXTRAS))
async def test_each_driver_is_built_from_its_setting(driver: str, tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path}/x.db", tmp_path, QUEUE_CONNECTION=driver, **SQS)
    database = Database.from_url(settings.DATABASE_URL)
    queue = build_queue(settings, database)
    assert type(queue).__name__ == EXTRAS[driver][2]
    assert queue.name == driver
    await queue.close()
    await database.dispose()


@pytest.mark.parametrize("driver", list(EXTRAS))
def test_a_missing_extra_names_the_extra_to_install(
    driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package, module, _ = EXTRAS[driver]
    for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, module, raising=False)
    settings = make_settings(f"sqlite:///{tmp_path}/x.db", tmp_path, QUEUE_CONNECTION=driver, **SQS)
    with pytest.raises(ConfigError) as raised:
        build_queue(settings, Database.from_url(settings.DATABASE_URL))
    assert f"pip install 'prasso-messaging[{driver}]'" in str(raised.value)
    assert str(raised.value).startswith("QUEUE_CONNECTION:")
