-- wrk script: one CloudEvent per request, each with a new id, about 500 bytes.
local counter = 0
local prefix = os.getenv("EVBUS_BENCH_PREFIX") or tostring(os.time())
local pad = string.rep("x", 330)
local headers = {["Content-Type"] = "application/cloudevents+json"}
local key = os.getenv("EVBUS_BENCH_KEY") or ""
if key ~= "" then
  headers["Authorization"] = "Bearer " .. key
end

request = function()
  counter = counter + 1
  local body = '{"specversion":"1.0","id":"' .. prefix .. "-" .. counter ..
    '","source":"/bench","type":"BenchEvent","subject":"k' .. (counter % 100) ..
    '","datacontenttype":"application/json","data":{"n":' .. counter .. ',"pad":"' .. pad .. '"}}'
  return wrk.format("POST", "/api/events/publish", headers, body)
end

response = function(status, headers, body)
  if status ~= 201 then
    error("publish answered " .. status .. ": " .. body)
  end
end
