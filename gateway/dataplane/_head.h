/* Shared by the sources of gateway.dataplane._head: _head.c (the module, response()) and
   _head_request.c (the RequestHead type it exports). */
#ifndef GATEWAY_DATAPLANE_HEAD_H
#define GATEWAY_DATAPLANE_HEAD_H

#include <Python.h>

extern PyTypeObject RequestHeadType;

#endif
