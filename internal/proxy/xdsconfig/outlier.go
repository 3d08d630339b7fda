package xdsconfig

import (
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// parseOutlier converts outlier_detection, unset fields taking Envoy's defaults
// (upstream.DefaultOutlierConfig). Success-rate and failure-percentage detection are implemented,
// so their enforcing_* defaults apply as in Envoy. Outlier detection extensions (monitors) and
// degraded-host detection are rejected.
func parseOutlier(od *clusterv3.OutlierDetection) (upstream.OutlierConfig, error) {
	o := upstream.DefaultOutlierConfig
	if len(od.GetMonitors()) > 0 {
		return o, fmt.Errorf("monitors: %w", ErrUnsupported)
	}
	if od.GetDetectDegradedHosts().GetValue() {
		return o, fmt.Errorf("detect_degraded_hosts: %w", ErrUnsupported)
	}
	u32 := func(dst *uint32, v *wrapperspb.UInt32Value) {
		if v != nil {
			*dst = v.GetValue()
		}
	}
	u32(&o.Consecutive5xx, od.GetConsecutive_5Xx())
	u32(&o.ConsecutiveGatewayFailure, od.GetConsecutiveGatewayFailure())
	u32(&o.ConsecutiveLocalOriginFailure, od.GetConsecutiveLocalOriginFailure())
	u32(&o.EnforcingConsecutive5xx, od.GetEnforcingConsecutive_5Xx())
	u32(&o.EnforcingConsecutiveGatewayFailure, od.GetEnforcingConsecutiveGatewayFailure())
	u32(&o.EnforcingConsecutiveLocalOrigin, od.GetEnforcingConsecutiveLocalOriginFailure())
	u32(&o.MaxEjectionPercent, od.GetMaxEjectionPercent())
	u32(&o.SuccessRateMinimumHosts, od.GetSuccessRateMinimumHosts())
	u32(&o.SuccessRateRequestVolume, od.GetSuccessRateRequestVolume())
	u32(&o.SuccessRateStdevFactor, od.GetSuccessRateStdevFactor())
	u32(&o.EnforcingSuccessRate, od.GetEnforcingSuccessRate())
	u32(&o.EnforcingLocalOriginSuccessRate, od.GetEnforcingLocalOriginSuccessRate())
	u32(&o.FailurePercentageThreshold, od.GetFailurePercentageThreshold())
	u32(&o.FailurePercentageMinimumHosts, od.GetFailurePercentageMinimumHosts())
	u32(&o.FailurePercentageRequestVolume, od.GetFailurePercentageRequestVolume())
	u32(&o.EnforcingFailurePercentage, od.GetEnforcingFailurePercentage())
	u32(&o.EnforcingFailurePercentageLocalOrigin, od.GetEnforcingFailurePercentageLocalOrigin())
	o.Interval = duration(od.GetInterval(), o.Interval)
	o.BaseEjectionTime = duration(od.GetBaseEjectionTime(), o.BaseEjectionTime)
	o.MaxEjectionTime = duration(od.GetMaxEjectionTime(), o.MaxEjectionTime)
	o.MaxEjectionTimeJitter = duration(od.GetMaxEjectionTimeJitter(), 0)
	o.SplitExternalLocalOriginErrors = od.GetSplitExternalLocalOriginErrors()
	o.AlwaysEjectOneHost = od.GetAlwaysEjectOneHost().GetValue()
	if v := od.GetSuccessfulActiveHealthCheckUnejectHost(); v != nil {
		o.SuccessfulActiveHealthCheckUnejectHost = v.GetValue()
	}
	if o.Interval <= 0 {
		return o, errors.New("interval: must be greater than 0")
	}
	// Envoy: "max_ejection_time_ must be bigger than base_ejection_time_".
	if o.MaxEjectionTime < o.BaseEjectionTime {
		return o, fmt.Errorf("max_ejection_time (%s) must not be less than base_ejection_time (%s)", o.MaxEjectionTime, o.BaseEjectionTime)
	}
	return o, nil
}
