"""Assertions on what `helm template` renders from charts/crucible, and on its Grafana dashboard.

charts/test.sh renders each value set into $CHART_RENDERED/NAME.yaml (the same files it
validates against the Kubernetes 1.20 schemas), then runs these tests one at a time, e.g.

    CHART_RENDERED=DIR python3 charts/tests/test_render.py Defaults.test_cluster_role

Each class reads the file named by its `rendered` attribute. Needs PyYAML, and promql-parser
for Dashboard: charts/test.sh's venv has both.
"""

import json
import os
import re
import unittest

import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crucible")

# The controller's ClusterRole, rule by rule (README.md lists the same).
EXPECTED_CLUSTER_RULES = [
    [["crucible.dev"], ["evaluations", "evaluationsuites"], ["get", "list", "watch", "create", "patch", "update", "delete"]],
    [["crucible.dev"], ["evaluations/status", "evaluationsuites/status", "evaluationquotas/status"], ["get", "patch", "update"]],
    [["crucible.dev"], ["evaluationquotas"], ["get", "list", "watch"]],
    [[""], ["pods"], ["get", "list", "watch", "create", "patch", "delete"]],
    [[""], ["pods/log"], ["get"]],
    [[""], ["configmaps"], ["get", "list", "watch", "create", "patch", "delete"]],
    [["networking.k8s.io"], ["networkpolicies"], ["get", "list", "watch", "create", "patch", "delete"]],
    [["node.k8s.io"], ["runtimeclasses"], ["get", "list", "watch"]],
    [["events.k8s.io"], ["events"], ["create", "patch"]],
    [[""], ["events"], ["create", "patch"]],
    [[""], ["secrets"], ["get"]],
]


def env(dep):
    """The first container's env of a Deployment, name -> value (None for valueFrom)."""
    c = dep["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in c["env"]}


def load(name):
    """The objects of $CHART_RENDERED/<name>.yaml."""
    with open(os.path.join(os.environ["CHART_RENDERED"], name + ".yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]


class Rendered(unittest.TestCase):
    """Base class: the objects of $CHART_RENDERED/<rendered>.yaml in self.docs."""

    rendered = None

    @classmethod
    def setUpClass(cls):
        if not os.environ.get("CHART_RENDERED"):
            raise RuntimeError("CHART_RENDERED is not set: run `bash charts/test.sh`, which renders the chart there")
        cls.docs = load(cls.rendered)

    @staticmethod
    def app_version():
        with open(os.path.join(CHART, "Chart.yaml")) as f:
            return yaml.safe_load(f)["appVersion"]

    def objs(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind, suffix=""):
        found = [d for d in self.objs(kind) if d["metadata"]["name"].endswith(suffix)]
        assert len(found) == 1, f"expected one {kind} *{suffix}, found {[d['metadata']['name'] for d in found]}"
        return found[0]


class Defaults(Rendered):
    """Default values: 2 replicas, leader election, PDB policy/v1beta1 on 1.20."""

    rendered = "defaults"

    def test_cluster_role(self):
        rules = [[r['apiGroups'], r['resources'], r['verbs']] for r in self.one('ClusterRole')['rules']]
        assert rules == EXPECTED_CLUSTER_RULES, json.dumps(rules, indent=1)
        assert all('resourceNames' not in r for r in self.one('ClusterRole')['rules'])
        crb = self.one('ClusterRoleBinding')
        assert crb['subjects'] == [{'kind': 'ServiceAccount', 'name': 'crucible', 'namespace': 'chart-validate'}], crb

    def test_namespaced_roles(self):
        system = self.one('Role', '-system')
        assert system['metadata']['namespace'] == 'chart-validate'
        assert [[r['apiGroups'], r['resources'], r['verbs']] for r in system['rules']] == [
            [[''], ['configmaps'], ['get', 'list', 'watch', 'create', 'patch', 'delete']],
            [[''], ['pods'], ['get', 'list', 'watch', 'create', 'delete']],
            [[''], ['pods/log'], ['get']],
            [['networking.k8s.io'], ['networkpolicies'], ['list', 'create', 'delete']],
            [[''], ['events'], ['list']]], system['rules']
        lease = self.one('Role', '-leader-election')
        assert [(r['apiGroups'], r['resources'], r['verbs'], r.get('resourceNames')) for r in lease['rules']] == [
            (['coordination.k8s.io'], ['leases'], ['create'], None),
            (['coordination.k8s.io'], ['leases'], ['get', 'update', 'patch'], ['crucible-controller'])], lease['rules']
        st = self.one('Role', '-selftest')
        assert [[r['apiGroups'], r['resources'], r['verbs']] for r in st['rules']] == [[['crucible.dev'], ['evaluations'], ['create', 'get', 'patch', 'delete']]]
        for rb in self.objs('RoleBinding'):
            assert rb['roleRef']['name'] == rb['metadata']['name'], rb

    def test_deployment(self):
        dep = self.one('Deployment')
        spec = dep['spec']['template']['spec']
        c = spec['containers'][0]
        assert dep['spec']['replicas'] == 2
        assert dep['spec']['strategy']['type'] == 'RollingUpdate'
        e = env(dep)
        assert e['CRUCIBLE_LEADER_ELECTION'] == 'true' and e['CRUCIBLE_LEASE_NAME'] == 'crucible-controller'
        assert e['CRUCIBLE_SYSTEM_NAMESPACE'] == 'chart-validate' and self.one('Role', '-leader-election')['metadata']['namespace'] == 'chart-validate'
        assert not {'CRUCIBLE_MAX_CPU', 'CRUCIBLE_MAX_MEMORY', 'CRUCIBLE_MAX_GPU'} & set(e), 'no controller-wide resource caps by default'
        assert e['CRUCIBLE_METRICS_ADDR'] == '0.0.0.0:8080' and e['CRUCIBLE_RUNTIME_CLASS'] == 'gvisor'
        assert e['CRUCIBLE_GPU_RUNTIME_CLASS'] == 'gvisor-nvproxy'
        assert 'CRUCIBLE_NAMESPACES' not in e, 'all namespaces by default'
        for k in ['CRUCIBLE_ALLOWLIST_RUNTIME_CLASS', 'CRUCIBLE_ALLOW_UNSANDBOXED', 'CRUCIBLE_DEFAULT_CPU', 'CRUCIBLE_DEFAULT_MEMORY',
                  'CRUCIBLE_DEFAULT_EPHEMERAL_STORAGE', 'CRUCIBLE_DEFAULT_TIMEOUT', 'CRUCIBLE_TMP_SIZE', 'CRUCIBLE_CONCURRENCY',
                  'CRUCIBLE_MAX_RUNNING', 'CRUCIBLE_NAMESPACE_MAX_RUNNING', 'CRUCIBLE_SCORE_SERIES_LIMIT', 'CRUCIBLE_LOG_FORMAT', 'CRUCIBLE_LOG']:
            assert e.get(k), k
        downward = {x['name']: x['valueFrom']['fieldRef']['fieldPath'] for x in c['env'] if 'valueFrom' in x}
        assert downward == {'POD_NAME': 'metadata.name', 'POD_NAMESPACE': 'metadata.namespace', 'POD_UID': 'metadata.uid',
                            'POD_IP': 'status.podIP'}, downward
        assert (e['CRUCIBLE_SANDBOX_CANARY'], e['CRUCIBLE_CANARY_ALLOWLIST']) == ('true', 'true'), e
        assert (e['CRUCIBLE_CANARY_INTERVAL'], e['CRUCIBLE_CANARY_TIMEOUT']) == ('10m', '2m'), e
        assert 'CRUCIBLE_CANARY_LISTEN_ADDRESS' not in e, 'the pod IP'
        assert c['image'] == 'localhost/crucible/controller:' + self.app_version(), c['image']
        assert e['CRUCIBLE_CANARY_IMAGE'] == c['image'], 'the canary runs the controller image'
        sc, psc = c['securityContext'], spec['securityContext']
        assert sc['readOnlyRootFilesystem'] and sc['allowPrivilegeEscalation'] is False and sc['capabilities']['drop'] == ['ALL']
        assert psc['runAsNonRoot'] and psc['runAsUser'] == 65532 and psc['seccompProfile']['type'] == 'RuntimeDefault'
        assert c['livenessProbe']['httpGet']['path'] == '/healthz' and c['readinessProbe']['httpGet']['path'] == '/readyz'
        assert c['resources']['requests']['cpu'] and c['resources']['requests']['memory']
        assert 'hostNetwork' not in spec
        # The git cache directory is writable although the root filesystem is not.
        mounts = {m['mountPath']: m['name'] for m in c['volumeMounts']}
        assert mounts.get(e['CRUCIBLE_GIT_CACHE_DIR']) == 'git-cache', mounts
        vols = {v['name']: v for v in spec['volumes']}
        assert (vols['git-cache']['emptyDir']['sizeLimit'], e['CRUCIBLE_GIT_CACHE_SIZE']) == ('4Gi', '2Gi')

    def test_network_policy_admits_canaries(self):
        ingress = self.one('NetworkPolicy')['spec']['ingress']
        assert ingress[1] == {'from': [{'podSelector': {'matchLabels': {'app.kubernetes.io/component': 'sandbox-canary'}}}]}, ingress

    def test_network_policy_admits_the_network_gate_of_sandbox_pods(self):
        e = env(self.one('Deployment'))
        assert (e['CRUCIBLE_NETWORK_GATE_PORT'], e['CRUCIBLE_NETWORK_GATE_TIMEOUT']) == ('9444', '1m'), e
        ingress = self.one('NetworkPolicy')['spec']['ingress']
        gate = {'ports': [{'port': 9444, 'protocol': 'TCP'}],
                'from': [{'podSelector': {'matchExpressions': [{'key': 'crucible.dev/run-id', 'operator': 'Exists'}]},
                          'namespaceSelector': {}}]}
        assert gate in ingress, ingress

    def test_pdb_v1beta1(self):
        pdb = self.one('PodDisruptionBudget')
        assert pdb['apiVersion'] == 'policy/v1beta1' and pdb['spec']['minAvailable'] == 1, pdb

    def test_no_optional_objects(self):
        assert not self.objs('ServiceMonitor') and not self.objs('RuntimeClass') and not self.objs('ConfigMap')
        assert len(self.objs('CustomResourceDefinition')) >= 1


class Kube125(Rendered):
    """--kube-version 1.25.0."""

    rendered = "v125"

    def test_pdb_v1(self):
        assert self.one('PodDisruptionBudget')['apiVersion'] == 'policy/v1'


class Optional(Rendered):
    """Everything optional switched on: ServiceMonitor, RuntimeClasses, dashboards."""

    rendered = "optional"

    def test_objects(self):
        sm = self.one('ServiceMonitor')
        assert sm['spec']['endpoints'][0]['port'] == 'metrics' and sm['metadata']['labels']['release'] == 'prometheus'
        svc = self.one('Service', '-metrics')
        assert svc['spec']['selector'] == sm['spec']['selector']['matchLabels']
        assert {r['metadata']['name']: r['handler'] for r in self.objs('RuntimeClass')} == {'gvisor': 'runsc', 'gvisor-net': 'runsc-net'}
        assert all(r['apiVersion'] == 'node.k8s.io/v1' for r in self.objs('RuntimeClass'))
        cm = self.one('ConfigMap', '-dashboard')
        assert cm['metadata']['labels']['grafana_dashboard'] == '1'
        with open(os.path.join(CHART, 'dashboards', 'crucible.json')) as f:
            assert json.loads(cm['data']['crucible.json']) == json.load(f)


class Gpu(Rendered):
    """The GPU RuntimeClass alone, renamed, pinned to GPU nodes."""

    rendered = "gpu"

    def test_gpu_runtime_class(self):
        rc = self.one('RuntimeClass')
        assert rc['metadata']['name'] == 'gvisor-gpu' and rc['handler'] == 'runsc-nvproxy', rc
        assert rc['scheduling'] == {'nodeSelector': {'nvidia.com/gpu.present': 'true'}}, rc
        assert env(self.one('Deployment'))['CRUCIBLE_GPU_RUNTIME_CLASS'] == 'gvisor-gpu'


class Single(Rendered):
    """One replica (no leader election, Recreate, no PDB, no Lease Role), no Secrets, caps."""

    rendered = "single"

    def test_single_replica(self):
        dep = self.one('Deployment')
        e = env(dep)
        assert e['CRUCIBLE_LEADER_ELECTION'] == 'false' and dep['spec']['strategy'] == {'type': 'Recreate'}
        assert e['CRUCIBLE_NAMESPACES'] == 'team-a,team-b'
        assert (e['CRUCIBLE_MAX_CPU'], e['CRUCIBLE_MAX_MEMORY'], e['CRUCIBLE_MAX_GPU']) == ('8', '16Gi', '0'), e
        assert not self.objs('PodDisruptionBudget')
        assert not [r for r in self.objs('Role') if r['metadata']['name'].endswith('-leader-election')]
        assert not [r for r in self.one('ClusterRole')['rules'] if 'secrets' in r['resources']]
        assert not [r for r in self.objs('Role') if any('secrets' in x['resources'] for x in r['rules'])]


class ResultsStore(Rendered):
    """A results store: its URL and the log budget in the environment, its claim mounted where
    the URL points, its Secret as environment; by default none of it."""

    rendered = "results"

    def test_results_store(self):
        dep = self.one('Deployment')
        e = env(dep)
        assert e['CRUCIBLE_RESULTS_STORE'] == 'file:///var/lib/crucible/results', e
        assert e['CRUCIBLE_SAMPLES_LOG_MAX_BYTES'] == '8388608', e
        assert e['CRUCIBLE_RESULTS_RETENTION'] == '2160h', e
        pod = dep['spec']['template']['spec']
        c = pod['containers'][0]
        assert {'name': 'results', 'mountPath': '/var/lib/crucible/results'} in c['volumeMounts'], c
        assert {'name': 'results', 'persistentVolumeClaim': {'claimName': 'crucible-results'}} in pod['volumes']
        assert c['envFrom'] == [{'secretRef': {'name': 'crucible-s3'}}], c
        defaults = load('defaults')
        dep = [d for d in defaults if d['kind'] == 'Deployment'][0]
        assert 'CRUCIBLE_RESULTS_STORE' not in env(dep) and 'CRUCIBLE_RESULTS_RETENTION' not in env(dep)
        assert 'envFrom' not in dep['spec']['template']['spec']['containers'][0]
        assert not [v for v in dep['spec']['template']['spec']['volumes'] if v['name'] == 'results']


class NamespacedSecrets(Rendered):
    """controller.namespaces with rbac.readSecrets: Secrets only in those namespaces."""

    rendered = "namespaced-secrets"

    def test_secrets_only_in_watched_namespaces(self):
        assert not [r for r in self.one('ClusterRole')['rules'] if 'secrets' in r['resources']], 'no cluster-wide Secrets'
        roles = [r for r in self.objs('Role') if any('secrets' in x['resources'] for x in r['rules'])]
        assert sorted(r['metadata']['namespace'] for r in roles) == ['team-a', 'team-b'], roles
        for role in roles:
            assert role['rules'] == [{'apiGroups': [''], 'resources': ['secrets'], 'verbs': ['get']}], role
            ns, name = role['metadata']['namespace'], role['metadata']['name']
            rb = [b for b in self.objs('RoleBinding') if b['metadata']['namespace'] == ns and b['metadata']['name'] == name]
            assert len(rb) == 1 and rb[0]['roleRef'] == {'apiGroup': 'rbac.authorization.k8s.io', 'kind': 'Role', 'name': name}, rb
            assert rb[0]['subjects'] == [{'kind': 'ServiceAccount', 'name': 'crucible', 'namespace': 'chart-validate'}], rb


class Canary(Rendered):
    """The canary disabled; elsewhere: another system namespace, an image, an address; and its
    image following the controller's digest."""

    rendered = "canary-off"

    def test_disabled(self):
        assert env(self.one('Deployment'))['CRUCIBLE_SANDBOX_CANARY'] == 'false'
        ingress = self.one('NetworkPolicy')['spec']['ingress']
        assert not any('sandbox-canary' in str(rule) for rule in ingress), 'no ingress for canaries'

    def test_elsewhere(self):
        with open(os.path.join(os.environ["CHART_RENDERED"], "canary-elsewhere.yaml")) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        dep = [d for d in docs if d['kind'] == 'Deployment'][0]
        e = env(dep)
        assert (e['CRUCIBLE_CANARY_IMAGE'], e['CRUCIBLE_CANARY_LISTEN_ADDRESS']) == ('mirror.example/crucible/controller:0.1.0', '10.0.0.7'), e
        assert dep['spec']['template']['spec']['containers'][0]['image'] == 'localhost/crucible/controller:' + self.app_version()
        assert (e['CRUCIBLE_CANARY_ALLOWLIST'], e['CRUCIBLE_CANARY_INTERVAL']) == ('false', '1h'), e
        ingress = [d for d in docs if d['kind'] == 'NetworkPolicy'][0]['spec']['ingress']
        assert ingress[1]['from'][0]['namespaceSelector'] == {}, ingress
        system = [d for d in docs if d['kind'] == 'Role' and d['metadata']['name'].endswith('-system')][0]
        assert system['metadata']['namespace'] == 'crucible-system', system

    def test_follows_the_controller_digest(self):
        with open(os.path.join(os.environ["CHART_RENDERED"], "canary-digest.yaml")) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        dep = [d for d in docs if d['kind'] == 'Deployment'][0]
        image = 'registry.example/crucible/controller@sha256:' + 'ab' * 32
        assert dep['spec']['template']['spec']['containers'][0]['image'] == image
        assert env(dep)['CRUCIBLE_CANARY_IMAGE'] == image, env(dep)


class Local(Rendered):
    """values-local.yaml, the local Kubernetes 1.20 cluster's values."""

    rendered = "local"

    def test_local_cluster(self):
        dep = self.one('Deployment')
        spec = dep['spec']['template']['spec']
        assert spec['hostNetwork'] is True and spec['dnsPolicy'] == 'ClusterFirstWithHostNet'
        e = env(dep)
        assert e['KUBERNETES_SERVICE_HOST'] == '127.0.0.1' and e['KUBERNETES_SERVICE_PORT'] == '6443'
        assert (e['CRUCIBLE_SANDBOX_CANARY'], e['CRUCIBLE_CANARY_ALLOWLIST']) == ('true', 'true'), 'kube-router enforces NetworkPolicy there'
        c = spec['containers'][0]
        assert c['image'] == 'localhost/crucible/controller:dev' and c['imagePullPolicy'] == 'Never'
        assert e['CRUCIBLE_CANARY_IMAGE'] == 'localhost/crucible/controller:dev', 'the image build.sh --import puts on the node'
        pod = self.one('Pod', '-selftest')
        assert pod['metadata']['annotations']['helm.sh/hook'] == 'test'
        assert pod['spec']['hostNetwork'] is True
        args = pod['spec']['containers'][0]['args']
        assert args[:3] == ['selftest', '--namespace', 'chart-validate'] and '--image' in args, args


def exprs(v):
    """Every "expr" string anywhere in a decoded JSON document."""
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "expr" and isinstance(x, str):
                yield x
            else:
                yield from exprs(x)
    elif isinstance(v, list):
        for x in v:
            yield from exprs(x)


class Dashboard(unittest.TestCase):
    """The Grafana dashboard's queries (controller/tests/dashboard_metrics.rs checks the names)."""

    def test_queries_parse(self):
        import promql_parser  # only this test needs it

        with open(os.path.join(CHART, "dashboards", "crucible.json")) as f:
            found = list(exprs(json.load(f)))
        assert len(found) >= 10, found
        bad = []
        for e in found:
            s = e.replace("$__rate_interval", "5m").replace("$__range", "6h")
            s = re.sub(r"\$\{?\w+\}?", ".*", s)   # $namespace etc. only appear inside label matchers
            try:
                promql_parser.parse(s)
            except Exception as error:
                bad.append(f"{e}: {error}")
        assert not bad, "\n".join(bad)
        print(len(found), "queries parsed")


class Gateway(Rendered):
    """gateway.enabled with one endpoint: its own hardened Deployment and Service, the token key
    in the controller and the gateway only, the provider key in the gateway only."""

    rendered = "gateway"

    def deployment(self, component):
        found = [d for d in self.objs('Deployment')
                 if d['spec']['template']['metadata']['labels'].get('app.kubernetes.io/component') == component]
        assert len(found) == 1, [d['metadata']['name'] for d in self.objs('Deployment')]
        return found[0]

    @staticmethod
    def secrets_mounted(dep):
        return {v['secret']['secretName'] for v in dep['spec']['template']['spec']['volumes'] if 'secret' in v}

    def test_gateway_deployment_is_restricted(self):
        dep = self.deployment('gateway')
        spec = dep['spec']['template']['spec']
        c = spec['containers'][0]
        assert dep['spec']['replicas'] == 1 and dep['spec']['strategy']['type'] == 'Recreate'
        assert c['args'] == ['gateway']
        assert spec['automountServiceAccountToken'] is False
        assert spec['securityContext']['runAsNonRoot'] is True
        sc = c['securityContext']
        assert sc['readOnlyRootFilesystem'] is True and sc['allowPrivilegeEscalation'] is False
        assert sc['capabilities'] == {'drop': ['ALL']} and sc['seccompProfile']['type'] == 'RuntimeDefault'
        e = env(dep)
        assert e['CRUCIBLE_GATEWAY_LISTEN'] == '0.0.0.0:8080' and e['CRUCIBLE_GATEWAY_METRICS_LISTEN'] == '0.0.0.0:9090'
        cm = self.one('ConfigMap', '-gateway-endpoints')
        endpoints = yaml.safe_load(cm['data']['endpoints.yaml'])['endpoints']
        assert endpoints == [{'name': 'stand-in', 'api': 'openai', 'baseURL': 'http://10.88.0.1:8090/v1',
                              'keyFile': '/var/run/secrets/crucible/endpoints/stand-in/apiKey',
                              'models': ['stand-in-small'],
                              'pricing': {'stand-in-small': {'inputPerMTok': 1, 'outputPerMTok': 2}}}], endpoints
        mounts = {m['mountPath'] for m in c['volumeMounts']}
        assert '/var/run/secrets/crucible/endpoints/stand-in' in mounts, mounts

    def test_service_selects_the_gateway_by_a_numeric_port(self):
        svc = self.one('Service', '-gateway')
        pod_labels = self.deployment('gateway')['spec']['template']['metadata']['labels']
        assert svc['spec']['selector'].items() <= pod_labels.items(), svc['spec']['selector']
        assert svc['spec']['selector']['app.kubernetes.io/component'] == 'gateway'
        assert [(p['port'], p['targetPort']) for p in svc['spec']['ports']] == [(8080, 8080)]
        controller = self.deployment('controller')
        assert not svc['spec']['selector'].items() <= controller['spec']['template']['metadata']['labels'].items()

    def test_keys_go_where_they_are_used_only(self):
        controller, gateway = self.deployment('controller'), self.deployment('gateway')
        key = self.one('Secret', '-gateway-token-key')
        assert len(key['data']['token-key']) >= 44, 'at least 32 bytes'
        assert self.secrets_mounted(controller) == {key['metadata']['name']}
        assert self.secrets_mounted(gateway) == {key['metadata']['name'], 'stand-in-key'}
        e = env(controller)
        assert e['CRUCIBLE_GATEWAY_SERVICE'] == 'chart-validate/crucible-gateway'
        assert e['CRUCIBLE_GATEWAY_TOKEN_KEY_FILE'] == '/var/run/secrets/crucible/token/token-key'
        assert 'CRUCIBLE_GATEWAY_SERVICE' not in env(self.deployment('gateway'))

    def test_prometheus_scrapes_the_gateway_apart_from_the_sandboxes_service(self):
        monitors = {m['metadata']['name']: m for m in self.objs('ServiceMonitor')}
        assert sorted(monitors) == ['crucible', 'crucible-gateway'], sorted(monitors)
        monitor = monitors['crucible-gateway']
        svc = self.one('Service', '-gateway-metrics')
        selected = [s['metadata']['name'] for s in self.objs('Service')
                    if monitor['spec']['selector']['matchLabels'].items() <= s['metadata']['labels'].items()]
        assert selected == [svc['metadata']['name']], selected
        assert [e['port'] for e in monitor['spec']['endpoints']] == ['metrics']
        assert [(p['name'], p['port'], p['targetPort']) for p in svc['spec']['ports']] == [('metrics', 9090, 'metrics')]
        gateway = self.deployment('gateway')
        assert svc['spec']['selector'].items() <= gateway['spec']['template']['metadata']['labels'].items()
        # the controller's ServiceMonitor still selects the controller's Service alone
        controller_selected = [s['metadata']['name'] for s in self.objs('Service')
                               if monitors['crucible']['spec']['selector']['matchLabels'].items() <= s['metadata']['labels'].items()]
        assert controller_selected == ['crucible-metrics'], controller_selected

    def test_controller_may_send_revocations_to_the_gateway(self):
        np = self.one('NetworkPolicy')
        pod_labels = self.deployment('gateway')['spec']['template']['metadata']['labels']
        to_gateway = [r for r in np['spec']['egress']
                      if any('podSelector' in p and p['podSelector']['matchLabels'].items() <= pod_labels.items()
                             for p in r.get('to', []))]
        assert [[p['port'] for p in r['ports']] for r in to_gateway] == [[8080]], np['spec']['egress']

    def test_controller_may_read_endpoints_and_the_gateway_service_only(self):
        rules = [[r['apiGroups'], r['resources'], r['verbs']] for r in self.one('ClusterRole')['rules']]
        # ModelEndpoints and their Ready condition, and the key Secrets' metadata (a Secret is
        # read whole only once labelled and host-bound: docs/models.md).
        gateway_rules = [[['crucible.dev'], ['modelendpoints'], ['get', 'list', 'watch']],
                         [['crucible.dev'], ['modelendpoints/status'], ['patch']],
                         [[''], ['secrets'], ['get', 'list', 'watch']]]
        assert rules == EXPECTED_CLUSTER_RULES[:7] + gateway_rules + EXPECTED_CLUSTER_RULES[7:], rules
        role = self.one('Role', '-gateway')
        assert role['rules'] == [{'apiGroups': [''], 'resources': ['services'], 'resourceNames': ['crucible-gateway'], 'verbs': ['get']}]
        binding = self.one('RoleBinding', '-gateway')
        assert binding['roleRef']['name'] == 'crucible-gateway'


if __name__ == "__main__":
    unittest.main()
