"""Onezone (Onedata) share handles: Onezone's handle API and the handle-proxy contract Onezone
calls (``views``), their rules (``service``) and the metadata they carry (``metadata``)."""
