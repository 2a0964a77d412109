package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/freshet-iot/freshet/hub"
)

// TestKubernetes checks the manifests against the hub: the ConfigMap's
// hub.yaml loads, gives each pod its own client id and a shared group, its
// state and token match the StatefulSet, and EMQX routes by client id.
func TestKubernetes(t *testing.T) {
	docs := func(path string) []map[string]any {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out []map[string]any
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var d map[string]any
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				return out
			} else if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			out = append(out, d)
		}
	}
	var hubYAML, manifest string
	for _, d := range docs("k8s/freshet-hub.yaml") {
		if d["kind"] == "ConfigMap" {
			hubYAML = d["data"].(map[string]any)["hub.yaml"].(string)
		}
	}
	raw, _ := os.ReadFile("k8s/freshet-hub.yaml")
	manifest = string(raw)
	t.Setenv("HOSTNAME", "freshet-hub-1")
	cfg, err := hub.ParseConfig(strings.NewReader(hubYAML))
	if err != nil {
		t.Fatalf("the ConfigMap's hub.yaml: %v", err)
	}
	if cfg.Broker.ClientID != "freshet-hub-freshet-hub-1" || cfg.Broker.SharedGroup == "" {
		t.Errorf("client id %q, shared group %q: each pod needs its own session in one shared group", cfg.Broker.ClientID, cfg.Broker.SharedGroup)
	}
	for _, want := range []string{"name: " + cfg.Influx.TokenEnv, "mountPath: " + cfg.DataDir, "kind: StatefulSet", "volumeClaimTemplates",
		"mountPath: " + filepath.Dir(cfg.HTTP.TokenFile), "mountPath: " + filepath.Dir(cfg.AckKeyFile), "secretName: freshet-hub-ack-key",
		"--from-file=./ack-key/" + filepath.Base(cfg.AckKeyFile)} {
		if !strings.Contains(manifest, want) {
			t.Errorf("freshet-hub.yaml lacks %q", want)
		}
	}
	if cfg.Memory.Limit == 0 || !strings.Contains(manifest, "limits: {memory: 320Mi}") || cfg.Memory.Limit >= 320<<20 {
		t.Errorf("memory.limit %d: want a soft limit below the container's 320Mi", cfg.Memory.Limit)
	}
	emqx, _ := os.ReadFile("k8s/emqx.yaml")
	if !strings.Contains(string(emqx), "EMQX_BROKER__SHARED_SUBSCRIPTION_STRATEGY, value: hash_clientid") {
		t.Error("EMQX does not route shared subscriptions by client id")
	}
	if !strings.Contains(string(emqx), `EMQX_MQTT__MAX_MQUEUE_LEN, value: "100000"`) {
		t.Error("EMQX's message queue is left at its default of 1000 batches: a fleet coming back at once overflows it")
	}
	if len(docs("k8s/emqx.yaml")) != 3 {
		t.Error("emqx.yaml: want two services and a StatefulSet")
	}
}
