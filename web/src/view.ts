// What a page is: an element to show, and what to stop (timers, streams, sockets) when it goes.

export interface View {
  element: HTMLElement;
  close?(): void;
}
