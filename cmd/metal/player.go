package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/metal-stream/metal/internal/flagenv"
)

// runPlayer manages player links through the gateway's admin API:
//
//	metal player add NAME [-expires 72h]
//	metal player list
//	metal player revoke NAME
func runPlayer(ctx context.Context, _ *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("player", flag.ContinueOnError)
	gw := fs.String("gateway", "http://127.0.0.1:8080", "gateway base URL")
	admin := fs.String("admin-token", "", "the gateway's admin token")
	expires := fs.String("expires", "", "link lifetime, such as 72h (add only; default: never)")
	flagenv.Usage(fs, "metal player add NAME [-expires 72h] | list | revoke NAME")
	if len(args) == 0 {
		fs.Usage()
		return errors.New("missing action: add, list or revoke")
	}
	action, rest := args[0], args[1:]
	var name string
	if (action == "add" || action == "revoke") && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if err := flagenv.Parse(fs, rest); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if *admin == "" {
		return errors.New("-admin-token (METAL_ADMIN_TOKEN) is required")
	}
	call := func(method, path string, body any) ([]byte, error) {
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(*gw, "/")+path, r)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+*admin)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode >= 300 {
			var e struct{ Error string }
			_ = json.Unmarshal(b, &e)
			return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, e.Error)
		}
		return b, nil
	}
	switch action {
	case "add":
		if name == "" {
			return errors.New("usage: metal player add NAME [-expires 72h]")
		}
		b, err := call(http.MethodPost, "/v1/admin/players", map[string]string{"name": name, "expires": *expires})
		if err != nil {
			return err
		}
		var link struct{ URL string }
		_ = json.Unmarshal(b, &link)
		fmt.Println(link.URL)
	case "list":
		b, err := call(http.MethodGet, "/v1/admin/players", nil)
		if err != nil {
			return err
		}
		os.Stdout.Write(append(b, '\n'))
	case "revoke":
		if name == "" {
			return errors.New("usage: metal player revoke NAME")
		}
		if _, err := call(http.MethodDelete, "/v1/admin/players/"+name, nil); err != nil {
			return err
		}
		fmt.Println("revoked", name)
	default:
		return fmt.Errorf("unknown action %q: want add, list or revoke", action)
	}
	return nil
}
