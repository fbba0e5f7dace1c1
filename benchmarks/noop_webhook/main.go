// A webhook that allows every request without looking at it: the latency floor any webhook pays on the
// same apiserver and machine. With a PATCH_FILE it answers every request with that JSON patch, which
// separates what the apiserver spends applying a patch from what our server spends computing it.
// benchmarks/webhook_latency.py measures ours against both in the same run.
package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
)

type review struct {
	Request struct {
		UID string `json:"uid"`
	} `json:"request"`
}

func main() {
	if len(os.Args) != 4 && len(os.Args) != 5 {
		log.Fatal("usage: noop-webhook ADDR CERT KEY [PATCH_FILE]")
	}
	patch := ""
	if len(os.Args) == 5 {
		raw, err := os.ReadFile(os.Args[4])
		if err != nil {
			log.Fatal(err)
		}
		patch = base64.StdEncoding.EncodeToString(raw)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var in review
		if err == nil {
			err = json.Unmarshal(body, &in)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		response := map[string]any{"uid": in.Request.UID, "allowed": true}
		if patch != "" {
			response["patchType"] = "JSONPatch"
			response["patch"] = patch
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "admission.k8s.io/v1",
			"kind": "AdmissionReview", "response": response})
	})
	log.Fatal(http.ListenAndServeTLS(os.Args[1], os.Args[2], os.Args[3], nil))
}
