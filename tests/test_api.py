from fastapi.testclient import TestClient

from gateway import __version__
from gateway.api.app import create_app


def test_health_metrics_and_openapi():
    client = TestClient(create_app())
    assert client.get("/healthz").json() == {"status": "ok", "version": __version__}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert f'ecm_gateway_info{{version="{__version__}"}} 1.0' in metrics.text
    assert client.get("/openapi.json").json()["info"]["title"] == "ECM Gateway"
