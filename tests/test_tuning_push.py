"""Pushing the adapter image to a real registry on loopback (Debian's docker-registry), read back by skopeo
and by the registry HTTP API: anonymous, htpasswd Basic auth, and Bearer-token auth."""

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

import pytest
from tuning_support import registry as reg_support

from tuning.image import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, build_adapter_image
from tuning.push import PushError, push
from tuning.registry_auth import CredentialError, api_host, challenge_scheme, credentials_for, normalize_registry

pytestmark = pytest.mark.integration  # a local OCI registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_registry = pytest.mark.skipif(
    reg_support.REGISTRY_BIN is None, reason="docker-registry binary absent (apt-get install docker-registry)"
)
needs_skopeo = pytest.mark.skipif(reg_support.SKOPEO_BIN is None, reason="skopeo absent (apt-get install skopeo)")
PRESET = "phi-3-mini-128k-instruct"


@pytest.fixture
def adapter(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    (d / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 8, "target_modules": ["qkv_proj"]})
    )
    (d / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    (d / "fine_tuning_completed.txt").write_text("{}\n")
    return d


def _layer_members(layer_gz: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_gz))) as tar:
        return {m.name: (m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def _check_layer(layer_gz: bytes, adapter) -> None:
    members = _layer_members(layer_gz)
    files = sorted(name for name, (m, _) in members.items() if m.isfile())
    assert files == ["data/adapter_config.json", "data/adapter_model.safetensors"]
    assert set(members) <= {"data", "data/adapter_config.json", "data/adapter_model.safetensors"}
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert members[f"data/{name}"][1] == (adapter / name).read_bytes()


def test_image_layout_is_deterministic_and_complete(adapter):
    layer, config, manifest = build_adapter_image(str(adapter), PRESET)
    again = build_adapter_image(str(adapter), PRESET)
    assert again[0].digest == layer.digest and again[2] == manifest
    _check_layer(layer.data, adapter)
    cfg = json.loads(config.data)
    assert cfg["rootfs"] == {
        "type": "layers",
        "diff_ids": ["sha256:" + hashlib.sha256(gzip.decompress(layer.data)).hexdigest()],
    }
    assert cfg["os"] == "linux" and cfg["architecture"] == "amd64"
    assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE and manifest["schemaVersion"] == 2
    assert manifest["config"] == {"mediaType": CONFIG_MEDIA_TYPE, "digest": config.digest, "size": len(config.data)}
    assert manifest["layers"] == [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": len(layer.data)}]
    assert manifest["annotations"] == {"sh.kaito.model.name": PRESET}
    assert "annotations" not in build_adapter_image(str(adapter), None)[2]


def test_missing_adapter_file_or_marker_is_refused(adapter):
    with pytest.raises(PushError, match="training did not complete"):
        os.remove(adapter / "fine_tuning_completed.txt")
        push(str(adapter), "127.0.0.1:1/a/b:c", plain_http=True)
    os.remove(adapter / "adapter_model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"adapter_model\.safetensors"):
        build_adapter_image(str(adapter), None)


def _b64(s):
    return base64.b64encode(s.encode()).decode()


def test_docker_config_credentials():
    cfg = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": _b64("hubuser:hubpass")},
            "myacr.azurecr.io": {"username": "00000000-0000-0000-0000-000000000000", "password": "acr-pass"},
            "http://127.0.0.1:5000": {"auth": _b64("alice:pa:ss")},
            "tokenonly.azurecr.io": {"identitytoken": "xyz"},
            "broken.example.com": {"auth": _b64("nocolon")},
        }
    }
    assert credentials_for(cfg, "registry-1.docker.io") == ("hubuser", "hubpass")
    assert credentials_for(cfg, "docker.io") == ("hubuser", "hubpass")
    assert credentials_for(cfg, "myacr.azurecr.io") == ("00000000-0000-0000-0000-000000000000", "acr-pass")
    assert credentials_for(cfg, "127.0.0.1:5000") == ("alice", "pa:ss")
    assert credentials_for(cfg, "other.example.com") is None
    with pytest.raises(CredentialError, match="identity token"):
        credentials_for(cfg, "tokenonly.azurecr.io")
    with pytest.raises(CredentialError, match="user:password"):
        credentials_for(cfg, "broken.example.com")
    assert normalize_registry("https://MyACR.azurecr.io/v2/") == "myacr.azurecr.io"
    assert api_host("docker.io") == "registry-1.docker.io" and api_host("ghcr.io") == "ghcr.io"
    assert challenge_scheme('Basic realm="x"') == "basic"
    assert challenge_scheme('Bearer realm="https://x/token",service="x"') == "token"
    assert challenge_scheme(None) == "token"


def _http_get(url, headers):
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def _read_back(host, repo, tag, headers):
    """Manifest, config and layer through the registry HTTP API (a reader independent of our code)."""
    accept = {**headers, "Accept": MANIFEST_MEDIA_TYPE}
    manifest = json.loads(_http_get(f"http://{host}/v2/{repo}/manifests/{tag}", accept))
    config = json.loads(_http_get(f"http://{host}/v2/{repo}/blobs/{manifest['config']['digest']}", headers))
    layer = _http_get(f"http://{host}/v2/{repo}/blobs/{manifest['layers'][0]['digest']}", headers)
    return manifest, config, layer


def _check_image(manifest, config, layer, adapter):
    assert manifest["mediaType"] == MANIFEST_MEDIA_TYPE
    assert manifest["annotations"]["sh.kaito.model.name"] == PRESET
    assert len(manifest["layers"]) == 1 and manifest["layers"][0]["mediaType"] == LAYER_MEDIA_TYPE
    assert manifest["layers"][0]["digest"] == "sha256:" + hashlib.sha256(layer).hexdigest()
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()]
    _check_layer(layer, adapter)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "tuning.push", *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


@needs_registry
def test_push_to_anonymous_registry_via_cli(adapter, tmp_path):
    (tmp_path / "reg").mkdir()
    with reg_support.running_registry(str(tmp_path / "reg")) as reg:
        ref = f"{reg['host']}/adapters/phi-3-qlora:0.0.1"
        res = _cli("--source", str(adapter), "--image", ref, "--plain-http", "--preset", PRESET)
        assert res.returncode == 0, res.stdout + res.stderr
        _check_image(*_read_back(reg["host"], "adapters/phi-3-qlora", "0.0.1", {}), adapter)
        if reg_support.SKOPEO_BIN:
            _check_with_skopeo(f"docker://{ref}", adapter, tmp_path, [])


def _check_with_skopeo(ref, adapter, tmp_path, creds):
    inspect = reg_support.skopeo("inspect", "--tls-verify=false", *creds, "--raw", ref)
    assert inspect.returncode == 0, inspect.stderr
    manifest = json.loads(inspect.stdout)
    assert manifest["annotations"]["sh.kaito.model.name"] == PRESET
    config = reg_support.skopeo("inspect", "--tls-verify=false", *creds, "--config", ref)
    assert config.returncode == 0, config.stderr
    assert json.loads(config.stdout)["rootfs"]["type"] == "layers"
    out = tmp_path / "skopeo-dir"
    src_creds = ["--src-creds", creds[1]] if creds else []
    copy = reg_support.skopeo("copy", "--src-tls-verify=false", *src_creds, ref, f"dir:{out}")
    assert copy.returncode == 0, copy.stderr
    layer = (out / manifest["layers"][0]["digest"].split(":", 1)[1]).read_bytes()
    _check_layer(layer, adapter)


@needs_registry
def test_push_with_basic_auth_from_docker_config(adapter, tmp_path):
    if reg_support.HTPASSWD_BIN is None:
        pytest.importorskip("bcrypt", reason="neither htpasswd (apache2-utils) nor python bcrypt to hash the password")
    (tmp_path / "reg").mkdir()
    with reg_support.running_registry(str(tmp_path / "reg"), auth="basic") as reg:
        ref = f"{reg['host']}/adapters/llama-lora:1"
        dc = tmp_path / "config.json"
        dc.write_text(json.dumps({"auths": {reg["host"]: {"auth": _b64(f"{reg['user']}:{reg['password']}")}}}))
        res = _cli(
            "--source", str(adapter), "--image", ref, "--plain-http", "--preset", PRESET, "--docker-config", str(dc)
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert reg["password"] not in res.stdout + res.stderr
        assert _b64(f"{reg['user']}:{reg['password']}") not in res.stdout + res.stderr
        basic = {"Authorization": "Basic " + _b64(f"{reg['user']}:{reg['password']}")}
        _check_image(*_read_back(reg["host"], "adapters/llama-lora", "1", basic), adapter)
        if reg_support.SKOPEO_BIN:
            _check_with_skopeo(f"docker://{ref}", adapter, tmp_path, ["--creds", f"{reg['user']}:{reg['password']}"])

        no_creds = _cli("--source", str(adapter), "--image", ref, "--plain-http")
        assert no_creds.returncode == 1 and "requires a login" in no_creds.stdout
        dc.write_text(json.dumps({"auths": {reg["host"]: {"username": reg["user"], "password": "wrong-pw"}}}))
        wrong = _cli("--source", str(adapter), "--image", ref, "--plain-http", "--docker-config", str(dc))
        assert wrong.returncode != 0 and "wrong-pw" not in wrong.stdout + wrong.stderr


@needs_registry
def test_push_with_bearer_token_auth(adapter, tmp_path):
    pytest.importorskip("cryptography", reason="the test token server signs JWTs with cryptography")
    (tmp_path / "reg").mkdir()
    with reg_support.running_registry(str(tmp_path / "reg"), auth="token") as reg:
        ref = f"{reg['host']}/team/adapters:v2"
        dc = tmp_path / "config.json"
        dc.write_text(
            json.dumps({"auths": {f"http://{reg['host']}": {"username": reg["user"], "password": reg["password"]}}})
        )
        digest = push(str(adapter), ref, str(dc), plain_http=True, preset=PRESET)
        assert digest.startswith("sha256:")
        scopes = [s for r in reg["token_requests"] for s in r["scope"]]
        assert all(r["authorized"] for r in reg["token_requests"])
        # The client may list the actions in either order (the registry's token spec leaves it open).
        granted = [(kind, name, set(actions)) for kind, name, actions in map(reg_support.parse_scope, scopes)]
        assert ("repository", "team/adapters", {"pull", "push"}) in granted
        # Read back with a token of our own from the realm (pull scope only).
        basic = "Basic " + _b64(f"{reg['user']}:{reg['password']}")
        realm = None
        try:
            _http_get(f"http://{reg['host']}/v2/", {})
        except urllib.error.HTTPError as exc:
            realm = exc.headers["Www-Authenticate"].split('realm="', 1)[1].split('"', 1)[0]
        token = json.loads(
            _http_get(
                f"{realm}?service={reg_support.SERVICE}&scope=repository:team/adapters:pull", {"Authorization": basic}
            )
        )["token"]
        manifest, config, layer = _read_back(reg["host"], "team/adapters", "v2", {"Authorization": f"Bearer {token}"})
        _check_image(manifest, config, layer, adapter)
        if reg_support.SKOPEO_BIN:
            _check_with_skopeo(f"docker://{ref}", adapter, tmp_path, ["--creds", f"{reg['user']}:{reg['password']}"])
