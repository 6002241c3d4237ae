"""The AKS install asks Azure for exactly what the Machine hook uses: a custom role with
agent pool read/write/delete, which must cover every ARM call the adapter makes and nothing more."""

import ast
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What each agentPools SDK operation needs in Azure RBAC.
ACTION_OF_OPERATION = {
    "get": "Microsoft.ContainerService/managedClusters/agentPools/read",
    "begin_create_or_update": "Microsoft.ContainerService/managedClusters/agentPools/write",
    "begin_delete": "Microsoft.ContainerService/managedClusters/agentPools/delete",
    "list": "Microsoft.ContainerService/managedClusters/agentPools/read",
}


def readme_role() -> dict:
    text = (REPO / "README.md").read_text()
    block = re.search(r"cat > kaito-agentpools-role.json <<JSON\n(.*?)\nJSON\n", text, re.S)
    assert block, "README's AKS install defines the custom role"
    return json.loads(block.group(1).replace("$CLUSTER_ID", "/subscriptions/s/x").replace("$CLUSTER", "c"))


def arm_client_operations() -> set[str]:
    """Every `self._client.<group>.<operation>(...)` call in the ARM client."""
    tree = ast.parse((REPO / "hooks" / "machine" / "arm_client.py").read_text())
    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            group = node.func.value
            if (
                isinstance(group, ast.Attribute)
                and isinstance(group.value, ast.Attribute)
                and group.value.attr == "_client"
            ):
                calls.add(f"{group.attr}.{node.func.attr}")
    return calls


def test_the_role_covers_exactly_the_arm_clients_calls():
    operations = arm_client_operations()
    assert operations and all(op.startswith("agent_pools.") for op in operations), operations
    needed = {ACTION_OF_OPERATION[op.split(".", 1)[1]] for op in operations}
    role = readme_role()
    assert set(role["Actions"]) == needed
    assert role["NotActions"] == [] and len(role["AssignableScopes"]) == 1


def test_the_install_grants_no_broad_role_and_no_cluster_credentials():
    text = (REPO / "README.md").read_text()
    assignments = re.findall(r"az role assignment create --role (\"[^\"]+\"|\S+)", text)
    assert assignments and all("Kaito agent pool operator" in a for a in assignments), assignments
    assert "listClusterAdminCredential" not in json.dumps(readme_role())
    assert "--role Contributor" not in text and "--role Owner" not in text
