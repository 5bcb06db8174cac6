package sidecar

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1024": 1024, "512MiB": 512 << 20, "1GiB": 1 << 30, "1GB": 1e9, "1gb": 1e9,
		"10 KB": 10e3, "1.5MiB": 3 << 19, "2K": 2048, "3B": 3,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "12 parsecs", "-1", "1e3"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestLoadConfigEnvAndFlags(t *testing.T) {
	env := map[string]string{"KV_PROJECT": "shop", "KV_DEFAULT_QUOTA": "512MiB", "KV_SOCKET": "/tmp/a.sock"}
	cfg, err := LoadConfig([]string{"--socket", "/tmp/b.sock", "--max-key-bytes", "64"}, func(k string) string { return env[k] }, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Project != "shop" || cfg.DefaultQuota != 512<<20 || cfg.Socket != "/tmp/b.sock" || cfg.Limits.MaxKeyBytes != 64 {
		t.Fatalf("config %+v", cfg)
	}
	if cfg.MaxFrameBytes != 2<<20 || cfg.MetricsAddr != DefaultMetricsAddr || cfg.SocketMode != 0o666 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	env["KV_DEFAULT_QUOTA"] = "plenty"
	if _, err := LoadConfig(nil, func(k string) string { return env[k] }, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "KV_DEFAULT_QUOTA") {
		t.Fatalf("bad env value: err = %v, want it to name KV_DEFAULT_QUOTA", err)
	}
}
