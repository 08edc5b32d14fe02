package kubernetes

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const deployDir = "../../deploy/kubernetes"

// rendered is a kustomization's output, each object in its own type.
type rendered struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	ingresses   []*networkingv1.Ingress
	policies    []*networkingv1.NetworkPolicy
	budgets     []*policyv1.PodDisruptionBudget
	autoscalers []*autoscalingv2.HorizontalPodAutoscaler
}

// render builds the kustomization in dir with the kustomize API and
// decodes every object strictly: a field its type does not have fails.
func render(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(deployDir, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{}}
	for doc := range bytes.SplitSeq(out, []byte("\n---\n")) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		decode := func(v any) {
			if err := yaml.UnmarshalStrict(doc, v); err != nil {
				t.Errorf("%s/%s: %v\n%s", meta.APIVersion, meta.Kind, err, doc)
			}
		}
		switch gvk := meta.APIVersion + "/" + meta.Kind; gvk {
		case "apps/v1/Deployment":
			var d appsv1.Deployment
			decode(&d)
			r.deployments[d.Name] = &d
		case "v1/Service":
			var s corev1.Service
			decode(&s)
			r.services[s.Name] = &s
		case "v1/ConfigMap":
			var c corev1.ConfigMap
			decode(&c)
			r.configMaps[c.Name] = &c
		case "networking.k8s.io/v1/Ingress":
			var i networkingv1.Ingress
			decode(&i)
			r.ingresses = append(r.ingresses, &i)
		case "networking.k8s.io/v1/NetworkPolicy":
			var p networkingv1.NetworkPolicy
			decode(&p)
			r.policies = append(r.policies, &p)
		case "policy/v1/PodDisruptionBudget":
			var p policyv1.PodDisruptionBudget
			decode(&p)
			r.budgets = append(r.budgets, &p)
		case "autoscaling/v2/HorizontalPodAutoscaler":
			var h autoscalingv2.HorizontalPodAutoscaler
			decode(&h)
			r.autoscalers = append(r.autoscalers, &h)
		default:
			t.Errorf("unexpected object %s", gvk)
		}
	}
	return r
}

var components = []string{"presence", "invites", "tokens", "edge"}

func TestBase(t *testing.T) {
	t.Parallel()
	r := render(t, "base")
	if len(r.deployments) != len(components) {
		t.Fatalf("%d deployments, want %d", len(r.deployments), len(components))
	}
	for _, c := range components {
		d := r.deployments["buddytok-"+c]
		if d == nil {
			t.Fatalf("no Deployment buddytok-%s", c)
		}
		checkDeployment(t, r, d)
	}

	edge := r.deployments["buddytok-edge"]
	svc := r.services["buddytok-edge"]
	if svc == nil || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(edge.Spec.Template.Labels)) {
		t.Fatal("the edge's Service does not select the edge's pods")
	}
	if len(r.ingresses) != 1 {
		t.Fatalf("%d ingresses, want 1", len(r.ingresses))
	}
	ing := r.ingresses[0]
	for _, rule := range ing.Spec.Rules {
		for _, p := range rule.HTTP.Paths {
			b := p.Backend.Service
			if b == nil || b.Name != svc.Name || !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name }) {
				t.Errorf("ingress path %s does not lead to the edge's Service: %+v", p.Path, p.Backend)
			}
		}
	}
	for _, a := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
		if secs, err := time.ParseDuration(ing.Annotations[a] + "s"); err != nil || secs < time.Minute {
			t.Errorf("ingress %s = %q: a WebSocket must outlive a minute of silence", a, ing.Annotations[a])
		}
	}
	if len(r.autoscalers) != 1 || r.autoscalers[0].Spec.ScaleTargetRef.Name != edge.Name || r.autoscalers[0].Spec.ScaleTargetRef.Kind != "Deployment" {
		t.Errorf("want one HorizontalPodAutoscaler, for the edge: %+v", r.autoscalers)
	} else if min := r.autoscalers[0].Spec.MinReplicas; min == nil || *min < 2 {
		t.Error("the edge's autoscaler may scale to one edge: its restart would drop every user at once")
	}

	// The edge drains within its grace: the preStop pause, then
	// SHUTDOWN_TIMEOUT, then dropping its lease.
	c := edge.Spec.Template.Spec.Containers[0]
	shutdown := envDuration(t, c, "SHUTDOWN_TIMEOUT")
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	grace := time.Duration(*edge.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if need := preStop + shutdown + 2*time.Second; grace <= need {
		t.Errorf("edge: terminationGracePeriodSeconds %s, but the drain needs %s", grace, need)
	}
	if preStop == 0 {
		t.Error("edge: no preStop pause: new sockets reach an edge that is shutting down")
	}

	cm := r.configMaps["buddytok"]
	if cm == nil || cm.Data["KV_REPLICAS"] != "1" || cm.Data["NATS_URL"] == "" {
		t.Errorf("config map: %+v", cm)
	}
	if cm != nil && cm.Data["TRUSTED_PROXIES"] == "" {
		t.Error("no TRUSTED_PROXIES: behind the ingress, every browser would count as its one address")
	}
	checkEdgePolicy(t, r, edge)
	tokens := r.deployments["buddytok-tokens"].Spec.Template.Spec.Containers[0]
	if !slices.ContainsFunc(tokens.EnvFrom, func(e corev1.EnvFromSource) bool {
		return e.SecretRef != nil && e.SecretRef.Name == "buddytok-opentok" && e.SecretRef.Optional != nil && *e.SecretRef.Optional
	}) {
		t.Error("tokens does not take OpenTok credentials from an optional Secret")
	}
}

// checkDeployment checks what every BuddyTok Deployment needs.
func checkDeployment(t *testing.T, r rendered, d *appsv1.Deployment) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s: selector %v does not match its pods' labels %v", d.Name, d.Spec.Selector, d.Spec.Template.Labels)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("%s: fewer than two replicas", d.Name)
	}
	pod := d.Spec.Template.Spec
	if pod.TerminationGracePeriodSeconds == nil {
		t.Errorf("%s: no terminationGracePeriodSeconds", d.Name)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: may run as root", d.Name)
	}
	for _, c := range pod.Containers {
		for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s/%s: no HTTP %s probe", d.Name, c.Name, what)
				continue
			}
			if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.HTTPGet.Port.String() }) {
				t.Errorf("%s/%s: %s probe on port %s, which the container does not name", d.Name, c.Name, what, p.HTTPGet.Port.String())
			}
		}
		if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("%s: readiness on %s, want /readyz", d.Name, c.ReadinessProbe.HTTPGet.Path)
		}
		// The operator endpoints (OPS_ADDR, the ConfigMap's) are on the
		// port named ops, which the probes and Prometheus use.
		ops := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == "ops" })
		if ops < 0 || r.configMaps["buddytok"] == nil || r.configMaps["buddytok"].Data["OPS_ADDR"] != fmt.Sprintf(":%d", c.Ports[ops].ContainerPort) {
			t.Errorf("%s/%s: no port named ops at the ConfigMap's OPS_ADDR", d.Name, c.Name)
		} else if got := d.Spec.Template.Annotations["prometheus.io/port"]; got != fmt.Sprint(c.Ports[ops].ContainerPort) {
			t.Errorf("%s: Prometheus scrapes port %s, not the ops port %d", d.Name, got, c.Ports[ops].ContainerPort)
		}
		for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if p != nil && p.HTTPGet != nil && p.HTTPGet.Port.String() != "ops" {
				t.Errorf("%s/%s: %s probe on port %s, want ops", d.Name, c.Name, what, p.HTTPGet.Port.String())
			}
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s/%s: requests and a memory limit needed: %+v", d.Name, c.Name, c.Resources)
		}
		if !slices.ContainsFunc(c.EnvFrom, func(e corev1.EnvFromSource) bool {
			return e.ConfigMapRef != nil && r.configMaps[e.ConfigMapRef.Name] != nil
		}) {
			t.Errorf("%s/%s: does not read the shared ConfigMap", d.Name, c.Name)
		}
		checkNATSUser(t, strings.TrimPrefix(d.Name, "buddytok-"), d.Spec.Template.Spec, c)
	}
	budgets := 0
	for _, b := range r.budgets {
		bs, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
		if err == nil && bs.Matches(labels.Set(d.Spec.Template.Labels)) {
			budgets++
		}
	}
	if budgets != 1 {
		t.Errorf("%s: %d PodDisruptionBudgets select its pods, want 1", d.Name, budgets)
	}
}

// checkEdgePolicy checks that only the ingress controller's pods reach the
// edges' users' port, where X-Forwarded-For is believed, and that the
// operator port stays reachable for Prometheus.
func checkEdgePolicy(t *testing.T, r rendered, edge *appsv1.Deployment) {
	t.Helper()
	podLabels := labels.Set(edge.Spec.Template.Labels)
	var selecting []*networkingv1.NetworkPolicy
	for _, p := range r.policies {
		if sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector); err == nil && sel.Matches(podLabels) {
			selecting = append(selecting, p)
		}
	}
	if len(selecting) != 1 || !slices.Contains(selecting[0].Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Fatalf("%d ingress NetworkPolicies select the edge's pods, want 1: any pod could forge X-Forwarded-For", len(selecting))
	}
	reaches := map[string]string{} // port name: who
	for _, rule := range selecting[0].Spec.Ingress {
		who := "anyone"
		if len(rule.From) > 0 {
			who = ""
			for _, peer := range rule.From {
				ns, pods := peer.NamespaceSelector, peer.PodSelector
				if peer.IPBlock != nil || ns == nil || pods == nil ||
					ns.MatchLabels["kubernetes.io/metadata.name"] != "ingress-nginx" || pods.MatchLabels["app.kubernetes.io/name"] != "ingress-nginx" {
					who = "a peer other than the ingress controller's pods"
					break
				}
				who = "the ingress controller"
			}
		}
		if len(rule.Ports) == 0 {
			reaches["every port"] = who
		}
		for _, p := range rule.Ports {
			if p.Port == nil {
				reaches["every port"] = who
				continue
			}
			reaches[p.Port.String()] = who
		}
	}
	if reaches["http"] != "the ingress controller" || reaches["every port"] != "" {
		t.Errorf("the edge's users' port is reached by %q (every port by %q), want the ingress controller alone", reaches["http"], reaches["every port"])
	}
	if reaches["ops"] == "" {
		t.Error("the NetworkPolicy shuts Prometheus out of the edge's ops port")
	}
	if c := edge.Spec.Template.Spec.Containers[0]; !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == "http" }) {
		t.Error("the edge names no http port for the NetworkPolicy")
	}
}

func envDuration(t *testing.T, c corev1.Container, key string) time.Duration {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == key {
			d, err := time.ParseDuration(e.Value)
			if err != nil {
				t.Fatalf("%s=%q: %v", key, e.Value, err)
			}
			return d
		}
	}
	t.Fatalf("%s: %s not set", c.Name, key)
	return 0
}

func TestNATSClusterOverlay(t *testing.T) {
	t.Parallel()
	r := render(t, "overlays/nats-cluster")
	if got := r.configMaps["buddytok"].Data["KV_REPLICAS"]; got != "3" {
		t.Errorf("KV_REPLICAS %q on a 3-node cluster, want 3", got)
	}
	for _, c := range []string{"presence", "invites", "tokens"} {
		if d := r.deployments["buddytok-"+c]; *d.Spec.Replicas != 3 {
			t.Errorf("%s: %d replicas, want 3", d.Name, *d.Spec.Replicas)
		}
	}
	for _, d := range r.deployments {
		checkDeployment(t, r, d)
	}
}

// The NATS Helm values keep what docs/operations.md promises: JetStream on
// files, every write flushed before it is acknowledged, three nodes for the
// overlay.
func TestNATSValues(t *testing.T) {
	t.Parallel()
	type values struct {
		Config struct {
			Cluster struct {
				Enabled  bool `json:"enabled"`
				Replicas int  `json:"replicas"`
			} `json:"cluster"`
			JetStream struct {
				Enabled   bool `json:"enabled"`
				FileStore struct {
					Enabled bool `json:"enabled"`
				} `json:"fileStore"`
				Merge map[string]any `json:"merge"`
			} `json:"jetstream"`
		} `json:"config"`
	}
	for file, nodes := range map[string]int{"values.yaml": 1, "values-cluster.yaml": 3} {
		data, err := os.ReadFile(filepath.Join(deployDir, "nats", file))
		if err != nil {
			t.Fatal(err)
		}
		var v values
		if err := yaml.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		js := v.Config.JetStream
		if !js.Enabled || !js.FileStore.Enabled || fmt.Sprint(js.Merge["sync_interval"]) != "always" {
			t.Errorf("%s: JetStream %+v: want it on files with sync_interval always", file, js)
		}
		got := 1
		if v.Config.Cluster.Enabled {
			got = v.Config.Cluster.Replicas
		}
		if got != nodes {
			t.Errorf("%s: %d NATS nodes, want %d", file, got, nodes)
		}
		if !strings.Contains(string(data), "helm install nats") {
			t.Errorf("%s does not say how to install the chart with it", file)
		}
	}
}
