-- CertWatch as an external component (XEP-0114) of Prosody.
--
-- 1. In the global section of prosody.cfg.lua (before any VirtualHost):
--
--      component_ports = { 5347 }
--      component_interfaces = { "127.0.0.1" }
--
-- 2. At the end of prosody.cfg.lua, this block (options after a Component
--    line belong to that component):

Component "certwatch.example.org"
    component_secret = "change-me"
