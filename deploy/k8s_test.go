package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// obj is one Kubernetes object as generic maps: enough to check the
// references between objects without the Kubernetes API modules.
type obj map[string]any

func (o obj) kind() string { s, _ := o["kind"].(string); return s }
func (o obj) name() string { return str(get(o, "metadata", "name")) }

// get walks maps by key; nil when a step is missing.
func get(v any, path ...string) any {
	if o, ok := v.(obj); ok {
		v = map[string]any(o)
	}
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any) string { s, _ := v.(string); return s }

func list(v any) []any { l, _ := v.([]any); return l }

func strMap(v any) map[string]string {
	out := map[string]string{}
	m, _ := v.(map[string]any)
	for k, x := range m {
		out[k] = fmt.Sprint(x)
	}
	return out
}

// loadManifests parses every document of every YAML file under deploy/k8s.
func loadManifests(t *testing.T) map[string][]obj {
	t.Helper()
	paths, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests under deploy/k8s (%v)", err)
	}
	out := map[string][]obj{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			// Into a plain map: yaml.v3 gives nested maps the type of
			// the target, and get walks map[string]any.
			var m map[string]any
			err := dec.Decode(&m)
			o := obj(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if o == nil {
				continue
			}
			if o.kind() == "" || str(o["apiVersion"]) == "" || o.name() == "" {
				t.Errorf("%s: an object without kind, apiVersion or metadata.name: %v", p, o)
			}
			out[p] = append(out[p], o)
		}
	}
	return out
}

// selects reports whether selector (matchLabels or a Service's plain map)
// matches labels: every key equal, and at least one key.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestKubernetesManifests: the manifests parse; every probe and Service
// port names a containerPort of the pod; probes use the metrics endpoints
// (/healthz, /readyz); every container's tidemark flags exist; every
// volumeMount has a volume; the headless Service selects the StatefulSet's
// pods and is its serviceName; the PodDisruptionBudget selects them too.
func TestKubernetesManifests(t *testing.T) {
	manifests := loadManifests(t)
	r := root()
	seen := map[string]int{}
	var services, pdbs, sets []obj
	for p, objs := range manifests {
		for _, o := range objs {
			switch o.kind() {
			case "Service":
				services = append(services, o)
			case "PodDisruptionBudget":
				pdbs = append(pdbs, o)
			case "StatefulSet", "Deployment", "DaemonSet":
				sets = append(sets, o)
				checkPodSpec(t, r, p+" "+o.kind()+"/"+o.name(), o, seen)
			}
		}
	}
	var controller obj
	for _, s := range sets {
		if s.name() == "tidemark-controller" {
			controller = s
		}
	}
	if controller == nil {
		t.Fatal("no StatefulSet tidemark-controller")
	}
	if n, _ := get(controller, "spec", "replicas").(int); n != 3 {
		t.Errorf("controller replicas %v, want 3", get(controller, "spec", "replicas"))
	}
	if len(list(get(controller, "spec", "volumeClaimTemplates"))) == 0 {
		t.Error("the controller StatefulSet has no volumeClaimTemplates: its Raft log would not survive a pod")
	}
	podLabels := strMap(get(controller, "spec", "template", "metadata", "labels"))
	if !selects(strMap(get(controller, "spec", "selector", "matchLabels")), podLabels) {
		t.Error("the controller StatefulSet's selector does not match its pod template")
	}
	var headless obj
	for _, s := range services {
		if s.name() == str(get(controller, "spec", "serviceName")) {
			headless = s
		}
	}
	switch {
	case headless == nil:
		t.Errorf("no Service named %q (the StatefulSet's serviceName)", get(controller, "spec", "serviceName"))
	case str(get(headless, "spec", "clusterIP")) != "None":
		t.Errorf("Service %s is not headless (clusterIP: None)", headless.name())
	case !selects(strMap(get(headless, "spec", "selector")), podLabels):
		t.Errorf("headless Service %s does not select the controller pods %v", headless.name(), podLabels)
	case get(headless, "spec", "publishNotReadyAddresses") != true:
		t.Errorf("headless Service %s: publishNotReadyAddresses must be true (peers resolve each other before any is ready)", headless.name())
	}
	var pdbOK bool
	for _, p := range pdbs {
		if selects(strMap(get(p, "spec", "selector", "matchLabels")), podLabels) {
			pdbOK = true
			if get(p, "spec", "maxUnavailable") != 1 && get(p, "spec", "minAvailable") != 2 {
				t.Errorf("PodDisruptionBudget %s lets more than one of three voters go", p.name())
			}
		}
	}
	if !pdbOK {
		t.Error("no PodDisruptionBudget selects the controller pods")
	}
	// Every Service's selector matches some workload's pods, and its
	// named target ports exist there.
	for _, s := range services {
		var pod obj
		for _, w := range sets {
			if selects(strMap(get(s, "spec", "selector")), strMap(get(w, "spec", "template", "metadata", "labels"))) {
				pod = w
			}
		}
		if pod == nil {
			t.Errorf("Service %s selects no workload's pods", s.name())
			continue
		}
		ports := containerPorts(pod)
		for _, sp := range list(get(s, "spec", "ports")) {
			tp := get(sp, "targetPort")
			if tp == nil {
				tp = get(sp, "port")
			}
			if !ports[fmt.Sprint(tp)] {
				t.Errorf("Service %s: targetPort %v is no containerPort of %s", s.name(), tp, pod.name())
			}
		}
	}
	for _, k := range []string{"controller", "agent"} {
		if seen[k] == 0 {
			t.Errorf("no container runs `tidemark %s`", k)
		}
	}
}

// containerPorts are the pod's containerPorts, by name and by number.
func containerPorts(w obj) map[string]bool {
	out := map[string]bool{}
	for _, c := range list(get(w, "spec", "template", "spec", "containers")) {
		for _, p := range list(get(c, "ports")) {
			out[fmt.Sprint(get(p, "containerPort"))] = true
			if n := str(get(p, "name")); n != "" {
				out[n] = true
			}
		}
	}
	return out
}

func checkPodSpec(t *testing.T, _ any, where string, w obj, seen map[string]int) {
	t.Helper()
	pod := get(w, "spec", "template", "spec")
	volumes := map[string]bool{}
	for _, v := range list(get(pod, "volumes")) {
		volumes[str(get(v, "name"))] = true
	}
	for _, v := range list(get(w, "spec", "volumeClaimTemplates")) {
		volumes[str(get(v, "metadata", "name"))] = true
	}
	for _, c := range list(get(pod, "containers")) {
		cname := where + " container " + str(get(c, "name"))
		ports := map[string]bool{}
		for _, p := range list(get(c, "ports")) {
			ports[fmt.Sprint(get(p, "containerPort"))] = true
			if n := str(get(p, "name")); n != "" {
				ports[n] = true
			}
		}
		for _, probe := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
			pr := get(c, probe)
			if pr == nil {
				continue
			}
			hg := get(pr, "httpGet")
			if hg == nil {
				continue
			}
			if port := fmt.Sprint(get(hg, "port")); !ports[port] {
				t.Errorf("%s: %s port %s is not a containerPort of the container", cname, probe, port)
			}
			path := str(get(hg, "path"))
			want := map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}[probe]
			if path != want {
				t.Errorf("%s: %s path %q, want %s", cname, probe, path, want)
			}
		}
		for _, m := range list(get(c, "volumeMounts")) {
			if !volumes[str(get(m, "name"))] {
				t.Errorf("%s: volumeMount %q has no volume or volumeClaimTemplate", cname, get(m, "name"))
			}
		}
		invs := containerInvocations(cname, c)
		if strings.Contains(str(get(c, "image")), "tidemark") && len(invs) == 0 {
			t.Errorf("%s: a tidemark image whose command line was not understood", cname)
		}
		checkAll(t, root(), invs, seen)
	}
}

// containerInvocations turns a container's command and args into tidemark
// command lines: the image's entrypoint is the binary (args alone), or a
// shell script whose lines run it.
func containerInvocations(where string, c any) []invocation {
	var command, args []string
	for _, x := range list(get(c, "command")) {
		command = append(command, fmt.Sprint(x))
	}
	for _, x := range list(get(c, "args")) {
		args = append(args, fmt.Sprint(x))
	}
	switch {
	case len(command) >= 2 && strings.HasSuffix(command[0], "sh") && command[1] == "-c":
		script := strings.Join(append(command[2:], args...), "\n")
		return findInvocations(where, script)
	case len(command) > 0 && binaryRE.MatchString(command[0]):
		return []invocation{{where: where, words: append(command[1:], args...)}}
	case len(command) == 0 && len(args) > 0:
		return []invocation{{where: where, words: args}}
	}
	return nil
}

// TestControllerStartScript runs the controller container's shell script
// (with sh, a stand-in tidemark that prints its arguments, and the join
// token's path moved into a temporary directory) as each of the three pods:
// node 0 bootstraps, nodes 1 and 2 join through the other two, with the
// token only when its Secret is mounted, and every node names itself by
// its pod's stable DNS name.
func TestControllerStartScript(t *testing.T) {
	var script string
	for _, objs := range loadManifests(t) {
		for _, o := range objs {
			if o.kind() == "StatefulSet" && o.name() == "tidemark-controller" {
				c := list(get(o, "spec", "template", "spec", "containers"))[0]
				script = str(list(get(c, "args"))[0])
			}
		}
	}
	if script == "" {
		t.Fatal("no controller start script")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "bin", "tidemark")
	if err := os.MkdirAll(filepath.Dir(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dir, "join", "token")
	if !strings.Contains(script, "/etc/tidemark/join/token") {
		t.Fatal("the script does not read the join token from /etc/tidemark/join/token")
	}
	script = strings.ReplaceAll(script, "/etc/tidemark/join/token", token)
	run := func(pod string) []string {
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = []string{"PATH=" + filepath.Dir(stub) + ":/usr/bin:/bin", "POD_NAME=" + pod, "TIDEMARK_REPO=s3://b/p"}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("script as %s: %v\n%s", pod, err, out)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	flag := func(args []string, name string) (string, bool) {
		for i, a := range args {
			if a == name {
				if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
					return args[i+1], true
				}
				return "", true
			}
		}
		return "", false
	}
	for _, withToken := range []bool{false, true} {
		if withToken {
			if err := os.MkdirAll(filepath.Dir(token), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(token, []byte("tmjoin1.x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			pod := fmt.Sprintf("tidemark-controller-%d", i)
			args := run(pod)
			if args[0] != "controller" {
				t.Fatalf("%s runs tidemark %q", pod, args)
			}
			if v, _ := flag(args, "--node-id"); v != pod {
				t.Errorf("%s: --node-id %q", pod, v)
			}
			if v, _ := flag(args, "--grpc-addr"); v != pod+".tidemark-controller:7400" {
				t.Errorf("%s: --grpc-addr %q", pod, v)
			}
			if v, _ := flag(args, "--repo"); v != "s3://b/p" {
				t.Errorf("%s: --repo %q", pod, v)
			}
			_, boot := flag(args, "--bootstrap")
			join, joins := flag(args, "--join")
			tok, hasTok := flag(args, "--join-token")
			switch {
			case i == 0 && (!boot || joins || hasTok):
				t.Errorf("%s: %q, want --bootstrap alone", pod, args)
			case i > 0 && (boot || !joins):
				t.Errorf("%s: %q, want --join", pod, args)
			case i > 0 && strings.Contains(join, pod+"."):
				t.Errorf("%s joins through itself: --join %s", pod, join)
			case i > 0 && len(strings.Split(join, ",")) != 2:
				t.Errorf("%s: --join %s, want the two other nodes", pod, join)
			case i > 0 && hasTok != withToken:
				t.Errorf("%s with the token mounted=%v: --join-token %q", pod, withToken, tok)
			}
			_, problems, _ := checkInvocation(root(), invocation{where: pod, words: args})
			for _, p := range problems {
				t.Error(p)
			}
		}
	}
}
