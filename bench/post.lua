-- wrk script: POST a ~1 KB JSON body (a small inference request) on every request.
--   wrk -t1 -c64 -d8s --latency -s bench/post.lua http://127.0.0.1:PORT/
local values = {}
for i = 1, 166 do
  values[i] = string.format("%.3f", (i * 37 % 1000) / 1000)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances":[[' .. table.concat(values, ",") .. ']],"id":"bench"}'
