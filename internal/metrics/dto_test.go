package metrics

import dto "github.com/prometheus/client_model/go"

type (
	dto_MetricFamily = dto.MetricFamily
	dto_LabelPair    = dto.LabelPair
)
