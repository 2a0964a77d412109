package hub_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// chromium finds Debian's Chromium, or fails/skips like a missing service.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testsvc.Required() {
		t.Fatalf("chromium is not installed and %s=1", testsvc.RequireEnv)
	}
	t.Skip("chromium is not installed, so the fleet page was not checked in a browser (apt-get install chromium)")
	return ""
}

// TestFleetPageInBrowser loads the hub's fleet page in headless Chromium
// while two devices report, and checks what a person would see.
func TestFleetPageInBrowser(t *testing.T) {
	browser := chromium(t)
	r := startHub(t)
	vals := make([]float64, 120)
	for i := range vals {
		vals[i] = 20 + float64(i%30)/10
	}
	vals[len(vals)-1] = 21.37
	// gw-page-2 reports for 200 s, the first 100 above any temperature: the
	// checks reach 80 s in (its watermark minus the allowed lateness of 2m),
	// so its out of range finding is open.
	hot := slices.Concat(slices.Repeat([]float64{150}, 100), vals[:100])
	for d, vs := range map[string][]float64{"gw-page-1": vals, "gw-page-2": hot} {
		for _, b := range batches(t, d, 1, 1, time.Now().Add(-3*time.Minute), vs, 60) {
			r.publish(d, b)
		}
	}
	codec := protocol.NewCodec(protocol.Limits{})
	st, _ := codec.EncodeStatus(&protocol.Status{Device: "gw-page-1", State: protocol.StateOnline, AgentVersion: "test", Epoch: 1, ClockSynced: true})
	if tok := r.pub.Publish("freshet/v1/gw-page-1/status", 1, true, st); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	r.waitStat(r.m().Readings, 320)
	testsvc.WaitFor(t, 30*time.Second, "the online status", func() error {
		for _, d := range r.h.Fleet().Devices() {
			if d.Device == "gw-page-1" && d.State == protocol.StateOnline {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	testsvc.WaitFor(t, 20*time.Second, "gw-page-2's out of range finding", func() error {
		for _, d := range r.h.Fleet().Devices() {
			if d.Device == "gw-page-2" && len(d.Findings) == 1 && d.Findings[0].Kind == quality.OutOfRange {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	srv := httptest.NewServer(r.h.Handler())
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible("#devices")); err != nil {
		t.Fatalf("browser: %v", err)
	}
	summary, err := chromedp.Run(ctx, chromedp.Text("#summary"))
	if err != nil {
		t.Fatal(err)
	}
	attention, err := chromedp.Run(ctx, chromedp.Text("#attention"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr.device")].map(r => r.innerText)`))
	if err != nil {
		t.Fatal(err)
	}
	lines, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("tr.device svg polyline").length`))
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 gives a PNG
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.TempDir(), "fleet.png")
	os.WriteFile(shot, png, 0o644)
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if !strings.Contains(summary, "2 devices, 1 online") || !strings.Contains(summary, "open findings 1") || !strings.Contains(summary, "readings stored 320") {
		t.Errorf("summary %q", summary)
	}
	if attention != "1 reading out of range" {
		t.Errorf("attention line %q", attention)
	}
	// The device with a finding comes first.
	if len(rows) != 2 || !strings.Contains(rows[1], "gw-page-1") || !strings.Contains(rows[1], "online") || !strings.Contains(rows[1], "21.37") || !strings.Contains(rows[0], "gw-page-2") ||
		!strings.Contains(rows[0], "out_of_range") || strings.Contains(rows[1], "out_of_range") {
		t.Errorf("rows %q", rows)
	}
	if lines != 2 {
		t.Errorf("%d sparklines, want one per device", lines)
	}
	if len(png) < 1000 {
		t.Errorf("screenshot of %d bytes", len(png))
	}
	if os.Getenv("FRESHET_KEEP_SCREENSHOT") != "" {
		os.WriteFile(os.Getenv("FRESHET_KEEP_SCREENSHOT"), png, 0o644)
	}

	// The device page, reached from the fleet table's link: its series
	// from InfluxDB over the last hour, its open finding and the batch it
	// had refused.
	r.publish("gw-page-2", []byte("not a batch"))
	r.waitStat(r.m().Rejections.WithLabelValues("malformed"), 1)
	testsvc.WaitFor(t, 30*time.Second, "a 1 m aggregate of gw-page-2 in InfluxDB", func() error {
		if len(r.aggregates("gw-page-2")) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	if err := chromedp.Do(ctx, chromedp.Click(`tr.device[data-device="gw-page-2"] a`), chromedp.WaitVisible("#charts")); err != nil {
		t.Fatalf("browser: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Text("#device"))
	if err != nil {
		t.Fatal(err)
	}
	charts, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#charts .chart")].map(c => c.dataset.series + " " + c.innerText.replace(/\s+/g, " "))`))
	if err != nil {
		t.Fatal(err)
	}
	drawn, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`["#charts svg polyline.raw", "#charts svg polygon.band"].map(s => document.querySelectorAll(s).length)`))
	if err != nil {
		t.Fatal(err)
	}
	findings, err := chromedp.Run(ctx, chromedp.Text("#findings"))
	if err != nil {
		t.Fatal(err)
	}
	refused, err := chromedp.Run(ctx, chromedp.Text("#refused"))
	if err != nil {
		t.Fatal(err)
	}
	png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot = filepath.Join(t.TempDir(), "device.png")
	os.WriteFile(shot, png, 0o644)
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if os.Getenv("FRESHET_KEEP_DEVICE_SCREENSHOT") != "" {
		os.WriteFile(os.Getenv("FRESHET_KEEP_DEVICE_SCREENSHOT"), png, 0o644)
	}
	if title != "gw-page-2" {
		t.Errorf("device page title %q", title)
	}
	// One chart, bme280's temperature, its last reading one of the values
	// after the hot ones (20-22.9 C), the range's top at 150 C.
	if len(charts) != 1 || !strings.HasPrefix(charts[0], "bme280/temperature") || !regexp.MustCompile(`· 2\d\.\d+ C at`).MatchString(charts[0]) || !strings.Contains(charts[0], "150 C") {
		t.Errorf("charts %q", charts)
	}
	if drawn[0] != 1 || drawn[1] != 1 {
		t.Errorf("%d raw lines and %d 1 m bands, want one each", drawn[0], drawn[1])
	}
	if !strings.Contains(findings, "out_of_range") || !strings.Contains(findings, "bme280/temperature") {
		t.Errorf("findings %q", findings)
	}
	if !strings.Contains(refused, "malformed") {
		t.Errorf("refused batches %q", refused)
	}
}
