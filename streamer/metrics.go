package streamer

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the streamer's Prometheus series. None has a per-session or
// per-peer label: one streamer serves one session, and Nomad's alloc labels
// identify it.
type metrics struct {
	reg              *prometheus.Registry
	frames           prometheus.Counter
	fps              prometheus.Gauge
	encodeLatency    prometheus.Histogram
	targetBitrate    prometheus.Gauge
	rtt              prometheus.Gauge
	loss             prometheus.Gauge
	encoder          *prometheus.GaugeVec
	peers            prometheus.Gauge
	inputMessages    *prometheus.CounterVec
	keyframeRequests prometheus.Counter
	framesDropped    prometheus.Counter
	resizes          prometheus.Counter
	clipboard        *prometheus.CounterVec
	iceRestarts      prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		frames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_streamer_frames_total", Help: "Encoded video frames."}),
		fps: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "metal_streamer_fps", Help: "Encoded video frames in the last second."}),
		encodeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "metal_streamer_encode_latency_seconds",
			Help:    "Time from capture to encoded frame.",
			Buckets: []float64{.001, .002, .004, .006, .008, .010, .015, .020, .030, .050, .100, .250},
		}),
		targetBitrate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "metal_streamer_target_bitrate_bps", Help: "Encoder bitrate set by congestion control."}),
		rtt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "metal_streamer_rtt_seconds", Help: "Round-trip time from the latest RTCP receiver report."}),
		loss: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "metal_streamer_packet_loss_ratio", Help: "Fraction lost from the latest RTCP receiver report."}),
		encoder: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "metal_streamer_encoder_info", Help: "The video encoder in use (value 1)."}, []string{"encoder"}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "metal_streamer_peers", Help: "Connected WebRTC peers."}),
		inputMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metal_streamer_input_messages_total", Help: "Data-channel input messages by result."}, []string{"result"}),
		keyframeRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_streamer_keyframe_requests_total", Help: "Key frames requested (connect, PLI, FIR)."}),
		framesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_streamer_frames_dropped_total", Help: "Encoded frames dropped because the sender fell behind (each asks for a key frame)."}),
		clipboard: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metal_streamer_clipboard_texts_total", Help: "Clipboard texts by direction (in: player to session) and result."}, []string{"direction", "result"}),
		iceRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_streamer_ice_restarts_total", Help: "ICE restarts on a connected peer (WHEP PATCH)."}),
		resizes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_streamer_resizes_total", Help: "Screen resizes to follow the owner's window (each restarts the capture and encoder)."}),
	}
	m.reg.MustRegister(m.iceRestarts, m.clipboard, m.resizes, m.frames, m.fps, m.encodeLatency, m.targetBitrate, m.rtt, m.loss, m.encoder,
		m.peers, m.inputMessages, m.keyframeRequests, m.framesDropped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
