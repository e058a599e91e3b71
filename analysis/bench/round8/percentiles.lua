-- wrk: print more of the latency distribution than --latency does (ms)
done = function(summary, latency, requests)
  local s = "PCT"
  for _, p in ipairs({50, 75, 90, 95, 97, 98, 99, 99.5, 99.9}) do
    s = s .. string.format(" p%s=%.2f", p, latency:percentile(p) / 1000)
  end
  print(s .. string.format(" max=%.2f n=%d", latency.max / 1000, summary.requests))
end
