"""A small HSS for the IMS units: Diameter Cx (TS 29.228/29.229) over TCP, Milenage AKA (TS 35.206).

diameter: the message codec; milenage: the AKA functions; cx: request handling without I/O;
server: the unit program (`python -m imsso.hss.server`).
"""
