// gitops-health computes what Flux and Argo CD would say of Crucible's objects, with the code
// they run: Flux's health checks are kstatus (sigs.k8s.io/cli-utils/pkg/kstatus), and Argo CD
// runs a custom health check (infrastructure/gitops/argocd/health.lua) in gopher-lua, set up as
// Argo CD sets it up (package, base and table libraries only; the object as the global `obj`;
// a one-second limit).
//
//	gitops-health cases DIR                     # DIR/health_test.yaml's cases against DIR/health.lua
//	gitops-health live HEALTH_LUA EXAMPLES_DIR  # stdin: `kubectl get -o json` of the examples' objects
//
// `live` compares each object with its example's `# expect:` line: a run that succeeded and
// passed is Current (kstatus) and Healthy (Argo CD); one that failed, timed out or did not
// pass is Failed and Degraded; nothing finished may read InProgress or Progressing. Exits 1 on
// any disagreement, 2 on bad input.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	var failed bool
	var err error
	switch os.Args[1] {
	case "cases":
		failed, err = cases(os.Args[2])
	case "live":
		if len(os.Args) < 4 {
			usage()
		}
		failed, err = live(os.Args[2], os.Args[3])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gitops-health: %v\n", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: gitops-health cases DIR | live HEALTH_LUA EXAMPLES_DIR < objects.json")
	os.Exit(2)
}

// health is Argo CD's health.HealthStatus as a check returns it.
type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

var validStatus = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

// argo runs script against obj as Argo CD's util/lua does for a custom health check.
func argo(script string, obj map[string]interface{}) (health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decode(l, obj))
	if err := l.DoString(script); err != nil {
		return health{}, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return health{}, fmt.Errorf("the check returned %s, not a table", l.Get(-1).Type())
	}
	h := health{Status: lua.LVAsString(table.RawGetString("status")), Message: lua.LVAsString(table.RawGetString("message"))}
	if !validStatus[h.Status] {
		return h, fmt.Errorf("the check returned the invalid status %q", h.Status)
	}
	return h, nil
}

// decode turns decoded JSON into Lua values as Argo CD's decodeValue does (null is nil).
func decode(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []interface{}:
		t := l.NewTable()
		for _, item := range v {
			t.Append(decode(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.NewTable()
		for key, item := range v {
			t.RawSetString(key, decode(l, item))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(v))
	}
}

// object reads one YAML or JSON object as JSON-decoded values (numbers as float64, as Argo
// CD's JSON decoding gives them).
func object(data []byte) (map[string]interface{}, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var obj map[string]interface{}
	return obj, json.Unmarshal(js, &obj)
}

// cases runs DIR/health_test.yaml (Argo CD's resource_customizations layout) and fails on a
// case whose status or message differs, and on a testdata file no case uses.
func cases(dir string) (bool, error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return false, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return false, err
	}
	var spec struct {
		Tests []struct {
			HealthStatus health `json:"healthStatus"`
			InputPath    string `json:"inputPath"`
		} `json:"tests"`
	}
	if err := yaml.UnmarshalStrict(raw, &spec); err != nil {
		return false, fmt.Errorf("health_test.yaml: %w", err)
	}
	used := map[string]bool{}
	passed, failed := 0, 0
	for _, tc := range spec.Tests {
		used[filepath.Clean(tc.InputPath)] = true
		data, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
		if err != nil {
			return false, err
		}
		obj, err := object(data)
		if err != nil {
			return false, fmt.Errorf("%s: %w", tc.InputPath, err)
		}
		got, err := argo(string(script), obj)
		switch {
		case err != nil:
			failed++
			fmt.Printf("FAIL %s: %v\n", tc.InputPath, err)
		case got != tc.HealthStatus:
			failed++
			fmt.Printf("FAIL %s: got %s %q, want %s %q\n", tc.InputPath, got.Status, got.Message, tc.HealthStatus.Status, tc.HealthStatus.Message)
		default:
			passed++
			fmt.Printf("ok   %s: %s\n", tc.InputPath, got.Status)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
	for _, f := range files {
		rel, _ := filepath.Rel(dir, f)
		if !used[rel] {
			failed++
			fmt.Printf("FAIL %s: no case uses it\n", rel)
		}
	}
	fmt.Printf("%d passed, %d failed (gopher-lua)\n", passed, failed)
	return failed > 0 || passed == 0, nil
}

// expectations reads the `# expect:` line of every example: kind/name -> key -> value.
func expectations(dir string) (map[string]map[string]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		var expect, kind, name string
		inMeta := false
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "# expect:") && expect == "":
				expect = strings.TrimSpace(strings.TrimPrefix(line, "# expect:"))
			case strings.HasPrefix(line, "kind:") && kind == "":
				kind = strings.TrimSpace(strings.TrimPrefix(line, "kind:"))
			case line == "metadata:":
				inMeta = true
			case inMeta && strings.HasPrefix(line, "  name:") && name == "":
				name = strings.TrimSpace(strings.TrimPrefix(line, "  name:"))
			}
		}
		fh.Close()
		if expect == "" || name == "" {
			continue
		}
		want := map[string]string{}
		for _, pair := range strings.Fields(expect) {
			if k, v, ok := strings.Cut(pair, "="); ok {
				want[k] = v
			}
		}
		if k, ok := want["kind"]; ok {
			kind = k
		}
		out[kind+"/"+name] = want
	}
	return out, nil
}

// wanted is what a GitOps tool must say of an object whose run ended as its example expects.
func wanted(want map[string]string) (kstatus status.Status, argoStatus string, ok bool) {
	switch {
	case want["phase"] == "Succeeded" && want["passed"] != "false":
		return status.CurrentStatus, "Healthy", true
	case want["phase"] == "Succeeded", want["phase"] == "Failed", want["phase"] == "TimedOut":
		return status.FailedStatus, "Degraded", true
	}
	return "", "", false
}

// live checks the objects on stdin (a List) against the examples' expectations.
func live(healthLua, examples string) (bool, error) {
	script, err := os.ReadFile(healthLua)
	if err != nil {
		return false, err
	}
	expect, err := expectations(examples)
	if err != nil {
		return false, err
	}
	var list struct {
		Items []map[string]interface{} `json:"items"`
	}
	// apimachinery's JSON: whole numbers become int64, as in the objects Flux and Argo CD read
	// (kstatus refuses a float64 generation).
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return false, fmt.Errorf("stdin: %w", err)
	}
	if err := utiljson.Unmarshal(raw, &list); err != nil {
		return false, fmt.Errorf("stdin: %w", err)
	}
	sort.Slice(list.Items, func(i, j int) bool {
		return fmt.Sprint(list.Items[i]["metadata"]) < fmt.Sprint(list.Items[j]["metadata"])
	})
	failed, checked := false, 0
	for _, item := range list.Items {
		u := &unstructured.Unstructured{Object: item}
		key := u.GetKind() + "/" + u.GetName()
		want, known := expect[key]
		if !known {
			continue
		}
		wantK, wantA, finished := wanted(want)
		if !finished {
			continue
		}
		checked++
		res, err := status.Compute(u)
		if err != nil {
			return false, fmt.Errorf("%s: kstatus: %w", key, err)
		}
		line := fmt.Sprintf("%-40s kstatus=%-10s", key, res.Status)
		bad := res.Status != wantK
		if u.GetKind() == "Evaluation" {
			h, err := argo(string(script), item)
			if err != nil {
				return false, fmt.Errorf("%s: health.lua: %w", key, err)
			}
			line += fmt.Sprintf(" argocd=%-11s", h.Status)
			bad = bad || h.Status != wantA
		}
		if bad {
			failed = true
			line = "FAIL " + line + fmt.Sprintf(" (want kstatus=%s argocd=%s for %v: %s)", wantK, wantA, want, res.Message)
		} else {
			line = "ok   " + line
		}
		fmt.Println(line)
	}
	if checked == 0 {
		return false, fmt.Errorf("no object on stdin matches an example with a finished expectation")
	}
	return failed, nil
}
