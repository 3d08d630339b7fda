package ui

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/trellis-mesh/trellis/internal/model"
)

// handleWeights is PUT /api/virtualservices/{namespace}/{name}/http/{index}/weights.
func (s *Server) handleWeights(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	index, err := strconv.Atoi(r.PathValue("index"))
	if err != nil || index < 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("http route index %q: want a number from 0", r.PathValue("index")))
		return
	}
	var req WeightsRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, `body: want {"weights": [n, ...]}: `+err.Error())
		return
	}
	vs := findVirtualService(s.opts.Config.Current().Snapshot, ns, name)
	if vs == nil {
		writeError(w, http.StatusNotFound, "no VirtualService "+ns+"/"+name)
		return
	}
	routes := vs.Spec.GetHttp()
	if index >= len(routes) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("VirtualService %s/%s has %d http routes; no spec.http[%d]", ns, name, len(routes), index))
		return
	}
	dests := routes[index].GetRoute()
	if len(req.Weights) != len(dests) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%d weights for spec.http[%d], which has %d destinations: want one per destination, in order",
			len(req.Weights), index, len(dests)))
		return
	}
	weights := make([]int32, len(req.Weights))
	for i, v := range req.Weights {
		if v < 0 || v > math.MaxInt32 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("weights[%d]: %d: want a weight from 0 to 100", i, v))
			return
		}
		weights[i] = int32(v)
	}
	if s.opts.Writer == nil || !s.opts.Writer.Editable(vs) {
		writeError(w, http.StatusConflict, fmt.Sprintf("VirtualService %s/%s (%s) cannot be written back from the console", ns, name, vs.Source))
		return
	}
	cfg, err := s.opts.Writer.SetWeights(r.Context(), vs, index, weights)
	var invalid *InvalidChange
	switch {
	case errors.As(err, &invalid):
		writeError(w, http.StatusUnprocessableEntity, invalid.Error())
		return
	case err != nil:
		s.log.Error("writing weights", "virtual_service", ns+"/"+name, "error", err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	updated := findVirtualServiceIn(cfg, ns, name)
	if updated == nil {
		writeError(w, http.StatusInternalServerError, "the written config has no VirtualService "+ns+"/"+name)
		return
	}
	writeJSON(w, http.StatusOK, s.virtualServiceOf(updated))
}

func findVirtualService(snap *model.Snapshot, ns, name string) *model.VirtualService {
	if snap == nil {
		return nil
	}
	return findVirtualServiceIn(snap.Config, ns, name)
}

func findVirtualServiceIn(cfg *model.Config, ns, name string) *model.VirtualService {
	if cfg == nil {
		return nil
	}
	for _, vs := range cfg.VirtualServices {
		if vs.Namespace == ns && vs.Name == name {
			return vs
		}
	}
	return nil
}
