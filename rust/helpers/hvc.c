// SPDX-License-Identifier: GPL-2.0

#include "../../drivers/tty/hvc/hvc_console.h"

__rust_helper void rust_helper_hvc_resize(struct hvc_struct *hp,
					  unsigned short rows,
					  unsigned short cols)
{
	struct winsize ws = { .ws_row = rows, .ws_col = cols };

	hvc_resize(hp, ws);
}

__rust_helper void rust_helper_hvc_set_irq_requested(struct hvc_struct *hp,
						     int requested)
{
	hp->irq_requested = requested;
}

__rust_helper u32 rust_helper_hvc_vtermno(struct hvc_struct *hp)
{
	return hp->vtermno;
}

__rust_helper void rust_helper_hvc_get_winsize(struct hvc_struct *hp,
					       unsigned short *rows,
					       unsigned short *cols)
{
	unsigned long flags;

	spin_lock_irqsave(&hp->lock, flags);
	*rows = hp->ws.ws_row;
	*cols = hp->ws.ws_col;
	spin_unlock_irqrestore(&hp->lock, flags);
}
