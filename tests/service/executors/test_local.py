"""The local executor without a server: one executor per data dir."""

from __future__ import annotations

import pytest


def test_one_server_per_data_dir(tmp_path):
    import asyncio

    from neurflow.service.http.app import build_services
    from neurflow.service.settings import Settings

    settings = Settings(data_dir=str(tmp_path), workers=0)
    first, second = build_services(settings), build_services(settings)

    async def scenario() -> None:
        await first.executor.start()
        try:
            with pytest.raises(RuntimeError, match="another NeurFlow server is using the data dir"):
                await second.executor.start()
        finally:
            await first.executor.stop()
        await second.executor.start()  # free again once the first one stopped
        await second.executor.stop()

    asyncio.run(scenario())
