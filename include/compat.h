/*
 * compat.h - force-included first in every Kiln translation unit (-include).
 *
 * Pulls in the system headers whose inline definitions would otherwise trip
 * over banned.h, then bans the unsafe functions for all code that follows.
 */
#ifndef KILN_COMPAT_H
#define KILN_COMPAT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <wchar.h>

#include "banned.h"

#endif
